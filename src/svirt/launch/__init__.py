"""svirt.launch: the QEMU command line, the QMP client, and starting QEMU confined.

* :mod:`svirt.launch.qemu`: ``build_command(domain, ...)`` (pure) and the disk
  helpers shared by start-up and hotplug.
* :mod:`svirt.launch.qmp`: ``QMPClient``, a synchronous QMP session.
* :mod:`svirt.launch.process`: ``spawn(argv, ...)`` forks, builds the private ``/dev``,
  sets the exec context, drops to the QEMU user and execs, reporting failures with the
  step that failed.
"""

from svirt.launch.process import Spawned, bind_monitor_socket, spawn, terminate, wait_exit
from svirt.launch.qemu import QemuCommand, build_command, kvm_usable
from svirt.launch.qmp import QMPClient, QMPError

__all__ = [
    "QMPClient",
    "QMPError",
    "QemuCommand",
    "Spawned",
    "bind_monitor_socket",
    "build_command",
    "kvm_usable",
    "spawn",
    "terminate",
    "wait_exit",
]
