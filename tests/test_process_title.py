"""QEMU's process title names the VM (issue 14, item 6), as seed 000's ``ps -u qemu``
shows ``qemu:ol8-img``: real QEMU started with ``-name guest=NAME,process=qemu:NAME``.

The kernel keeps 15 bytes of a thread name (TASK_COMM_LEN 16 with its NUL), so ``ps``
shows ``qemu:`` and the first 10 bytes of a longer name; the command line keeps the
whole name, which is what svirt reads to find a VM (audit PROCTITLE, ``qemu_alive``'s
fallback), so nothing that finds VMs is cut short.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsutil import config, image_dir, make_file, stop_all
from svirt.audit.explain import _vm_from_proctitle
from svirt.cli.main import main
from svirt.conf import Config
from svirt.doctor import _processes
from svirt.domain import parse_domain
from svirt.launch.lifecycle import qemu_alive, start_domain
from svirt.state.domains import DomainStore

pytestmark = pytest.mark.qemu

SHORT = "ol8-img"  # the seed's
LONG = "web,1-with-a-long-name"  # a comma (QEMU writes it twice) and more than 10 bytes


def vm_xml(name: str, img: Path) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{img}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
    )


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    with image_dir("svirt-title-") as d:
        yield d


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[Config]:
    c = config(tmp_path)
    try:
        yield c
    finally:
        stop_all(c)


def test_ps_shows_qemu_colon_name_cut_as_the_kernel_cuts_it(
    cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pids = {}
    for i, name in enumerate((SHORT, LONG)):
        img = make_file(tmp_path / f"{i}.img", uid=1001, gid=1001)
        pids[name] = start_domain(cfg, parse_domain(vm_xml(name, img))).pid
    titles = {
        name: subprocess.run(
            ["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True, check=True
        ).stdout.strip()
        for name, pid in pids.items()
    }
    assert titles == {SHORT: "qemu:ol8-img", LONG: "qemu:web,1-with"}
    for name, pid in pids.items():
        assert Path(f"/proc/{pid}/comm").read_text() == titles[name] + "\n"
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        # The whole name stays on the command line: audit explain's PROCTITLE reading.
        assert _vm_from_proctitle(argv) == name
    assert "guest=web,,1-with-a-long-name,process=qemu:web,,1-with-a-long-name" in (
        Path(f"/proc/{pids[LONG]}/cmdline").read_text()
    )

    # doctor's process scan still knows them for QEMUs.
    procs = _processes()
    assert all(procs[pid].qemu for pid in pids.values())
    # qemu_alive's fallback for records without a start time reads -name guest=NAME,.
    store = DomainStore(cfg.state_dir)
    for name in pids:
        rec = store.read(name)
        assert rec is not None and qemu_alive(dataclasses.replace(rec, pid_start=None))
    # svirt list finds both, running.
    conf = tmp_path / "svirt.conf"
    conf.write_text(
        f'security_driver = ["selinux"]\nstate_dir = "{cfg.state_dir}"\n'
        f'libvirt_run_dir = "{tmp_path}/libvirt-run"\nvm_identity = "off"\n'
    )
    assert main(["list", "--config", str(conf), "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert {n: (e["pid"], e["state"]) for n, e in listed.items()} == {
        n: (pid, "running") for n, pid in pids.items()
    }
