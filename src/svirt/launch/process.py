"""Starting QEMU: fork, confine the child, exec; failures come back through a pipe.

The child, before exec and in this order:

1. starts a new session (a Ctrl-C aimed at ``svirt`` must not reach the VM), restores
   default signal handling, points stdin at ``/dev/null`` and stdout/stderr at the log
   file, and closes every other descriptor but the ones passed to QEMU;
2. builds the private ``/dev`` (:func:`svirt.host.namespace.build_private_dev`) unless
   no plan is given (``namespaces = []``); this needs root, so it comes first;
3. sets the exec SELinux context where SELinux is enabled (libvirt's ``virExec`` order:
   label, then identity), and does nothing with it elsewhere: the caller records it;
4. drops supplementary groups, gid and uid to the QEMU identity (``setresgid`` /
   ``setresuid``: no saved id left to regain root with);
5. execs QEMU.

A failing step writes ``step NUL reason`` to a close-on-exec pipe and exits 127; a
successful exec closes the pipe with nothing written. The parent raises
``LaunchError("<step>: <reason>")``, where the step is libvirt's text for the same call
(``cannot change to uid to '107': Operation not permitted``, ``cannot execute binary
/usr/bin/qemu-system-x86_64: Exec format error``) or ``building the private /dev``
followed by libvirt's namespace error. Everything that can be resolved beforehand (the
binary, the identity, the /dev plan, whether SELinux is on) is resolved in the parent,
so the child makes system calls only.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from svirt.errors import PREFIX_INTERNAL, LaunchError, SvirtError
from svirt.host import selinux
from svirt.host.ids import Identity, Pid
from svirt.host.namespace import DevPlan, build_private_dev

__all__ = [
    "DEFAULT_ENV",
    "Spawned",
    "bind_monitor_socket",
    "spawn",
    "terminate",
    "wait_exit",
]

DEFAULT_ENV: Mapping[str, str] = {
    "LC_ALL": "C",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
_CHILD_FAILED = 127


@dataclass(frozen=True, slots=True)
class Spawned:
    """A started QEMU process.

    ``exec_context`` is the label QEMU was meant to run with; ``exec_context_enforced``
    says whether it was applied (SELinux enabled) or only recorded (SELinux off: the
    caller must say so). ``private_dev`` says whether QEMU got its own ``/dev``.
    """

    pid: Pid
    argv: tuple[str, ...]
    identity: Identity | None
    exec_context: str | None
    exec_context_enforced: bool
    private_dev: bool


class _StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(step, reason)
        self.step = step
        self.reason = reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SvirtError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def bind_monitor_socket(
    path: str | os.PathLike[str], *, context: str | None = None
) -> socket.socket:
    """A listening unix socket for QEMU's monitor (pass its fd to QEMU with ``qmp_fd``).

    Bound by root, mode 0600: the QEMU user never needs to create files in the state
    directory, and a client can connect before QEMU is up (the connection waits in the
    backlog until QEMU accepts it). A stale socket left at ``path`` is replaced; any
    other kind of file there is an error. Close the parent's copy once :func:`spawn`
    returned, so that a client sees end-of-file, not a silent backlog, if QEMU dies.
    ``context`` (the VM's process label) is the socket's label where SELinux is enabled,
    as libvirt does: QEMU may not use a socket of the daemon's own domain.
    """
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise LaunchError(f"{PREFIX_INTERNAL}refusing to replace non-socket {p}")
        os.unlink(p)
    labelled = context is not None and selinux.is_enabled()
    if labelled:
        try:
            selinux.set_socket_create_context(context)
        except OSError as exc:
            raise LaunchError(
                f"{PREFIX_INTERNAL}cannot label monitor socket {p} {context}: {exc.strerror}"
            ) from None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    finally:
        if labelled:
            selinux.set_socket_create_context(None)
    try:
        sock.bind(p)
        os.chmod(p, 0o600)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        raise LaunchError(
            f"{PREFIX_INTERNAL}cannot create monitor socket {p}: {exc.strerror or exc}"
        ) from None
    return sock


def _resolve_binary(name: str, env: Mapping[str, str]) -> str:
    if "/" in name:
        found: str | None = name if os.access(name, os.X_OK) else None
    else:
        found = shutil.which(name, path=env.get("PATH", DEFAULT_ENV["PATH"]))
    if found is None:
        raise LaunchError(f"Cannot find QEMU binary {name}: No such file or directory")
    return found


# The label of QEMU's log file where SELinux is enabled (libvirt's /var/log/libvirt/qemu).
LOG_CONTEXT = "system_u:object_r:virt_log_t:s0"


def _open_log(path: str | os.PathLike[str]) -> int:
    try:
        # O_NOFOLLOW: the log lives in a directory an attacker might plant links in.
        return os.open(
            path,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
    except OSError as exc:
        raise LaunchError(
            f"{PREFIX_INTERNAL}cannot open log file {os.fspath(path)}: {exc.strerror}"
        ) from None


def _close_other_fds(keep: Sequence[int], max_fd: int) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max_fd)


def _child(
    *,
    exe: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    err_w: int,
    log_fd: int,
    null_fd: int,
    pass_fds: Sequence[int],
    max_fd: int,
    dev_plan: DevPlan | None,
    scratch: str,
    exec_context: str | None,
    identity: Identity | None,
    cwd: str,
) -> None:  # pragma: no cover - runs in the forked child only
    step = "preparing the QEMU process"
    try:
        os.setsid()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            # Python ignores SIGPIPE, and ignored signals stay ignored across exec.
            signal.signal(sig, signal.SIG_DFL)
        step = "redirecting QEMU's output to its log"
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        _close_other_fds([err_w, *pass_fds], max_fd)
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        if dev_plan is not None:
            step = "building the private /dev"
            build_private_dev(dev_plan, scratch=scratch)
        # The step texts below are libvirt's (virExec, virSetUIDGID) for the same calls.
        if exec_context is not None:
            step = f"unable to set security context '{exec_context}'"
            selinux.set_exec_context(exec_context)
        if identity is not None:
            step = "cannot set supplemental groups"
            os.setgroups(list(identity.groups))
            step = f"cannot change to '{identity.gid}' group"
            os.setresgid(identity.gid, identity.gid, identity.gid)
            step = f"cannot change to uid to '{identity.uid}'"
            os.setresuid(identity.uid, identity.uid, identity.uid)
            if os.getresuid() != (identity.uid,) * 3 or os.getresgid() != (identity.gid,) * 3:
                raise _StepFailed(step, "the ids did not change")
        step = f"cannot change to directory {cwd}"
        os.chdir(cwd)
        step = f"cannot execute binary {exe}"
        os.execve(exe, list(argv), dict(env))
    except _StepFailed as exc:
        payload = f"{exc.step}\0{exc.reason}"
    except BaseException as exc:
        payload = f"{step}\0{_reason(exc)}"
    try:
        os.write(err_w, payload.encode("utf-8", "replace")[:4096])
    finally:
        os._exit(_CHILD_FAILED)


def spawn(
    argv: Sequence[str],
    *,
    log_path: str | os.PathLike[str],
    identity: Identity | None = None,
    dev_plan: DevPlan | None = None,
    scratch: str = "/tmp",
    exec_context: str | None = None,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    on_forked: Callable[[int], None] | None = None,
) -> Spawned:
    """Fork and exec ``argv`` (QEMU) confined as described in the module docstring.

    ``dev_plan`` (from :func:`svirt.host.namespace.plan_private_dev`) gives QEMU a
    private ``/dev``; None leaves it in our mount namespace. ``identity`` None keeps
    root's identity (only for tests and debugging). ``pass_fds`` stay open in QEMU under
    the same numbers (the monitor socket). Returns once QEMU has been exec'd; raises
    :class:`LaunchError` ``"<step>: <reason>"`` when a step in the child failed (the
    child is reaped).

    ``on_forked(pid)`` runs in the parent after the fork and before the child does
    anything: the child waits for it on a pipe, and exits without exec'ing if the parent
    dies first or ``on_forked`` raises. The caller records the pid (and its start time)
    there, so a QEMU can never run without being recorded, and is never searched for
    by name after a crash.
    """
    if not argv:
        raise ValueError("spawn needs a command")
    environ = dict(DEFAULT_ENV if env is None else env)
    exe = _resolve_binary(argv[0], environ)
    enforce = exec_context is not None and selinux.is_enabled()
    max_fd = os.sysconf("SC_OPEN_MAX")
    log_fd = _open_log(log_path)
    if enforce:
        # QEMU appends its stdout/stderr to the log as the VM's domain: give the file the
        # type libvirt's QEMU logs have (virt_log_t), which every VM may append to; the
        # state directory's own type (e.g. virt_tmp_t) is not (found in the lab).
        try:
            selinux.fsetfilecon(log_fd, LOG_CONTEXT)
        except OSError as exc:
            os.close(log_fd)
            raise LaunchError(
                f"{PREFIX_INTERNAL}cannot label log file {os.fspath(log_path)} "
                f"{LOG_CONTEXT}: {exc.strerror}"
            ) from None
    try:
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(log_fd)
        raise
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(err_r)
            os.close(go_w)
            try:
                go = os.read(go_r, 1)
            except OSError:
                go = b""
            if go != b"g":
                os._exit(_CHILD_FAILED)  # the parent died or refused: never exec
            os.close(go_r)
            _child(
                exe=exe,
                argv=argv,
                env=environ,
                err_w=err_w,
                log_fd=log_fd,
                null_fd=null_fd,
                pass_fds=tuple(pass_fds),
                max_fd=max_fd,
                dev_plan=dev_plan,
                scratch=scratch,
                exec_context=exec_context if enforce else None,
                identity=identity,
                cwd=cwd,
            )
        os.close(err_w)
        err_w = -1
        os.close(go_r)
        go_r = -1
        try:
            if on_forked is not None:
                on_forked(pid)
        except BaseException:
            os.close(go_w)  # end of file: the child exits without exec'ing
            go_w = -1
            os.waitpid(pid, 0)
            raise
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        chunks: list[bytes] = []
        while chunk := os.read(err_r, 4096):
            chunks.append(chunk)
    finally:
        for fd in (err_r, err_w, go_r, go_w, log_fd, null_fd):
            if fd >= 0:
                os.close(fd)
    if chunks:
        os.waitpid(pid, 0)
        step, _, reason = b"".join(chunks).decode("utf-8", "replace").partition("\0")
        raise LaunchError(f"{step}: {reason}")
    return Spawned(
        pid=Pid(pid),
        argv=tuple(argv),
        identity=identity,
        exec_context=exec_context,
        exec_context_enforced=enforce,
        private_dev=dev_plan is not None,
    )


def wait_exit(pid: Pid | int, timeout: float | None = None) -> int | None:
    """Wait for our child ``pid`` to exit and reap it.

    Returns its exit code (negative: killed by that signal, as in :mod:`subprocess`),
    or None when ``timeout`` seconds passed first (the child is left running).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1  # already reaped by someone, or never existed: waitpid says which
    try:
        if pidfd >= 0:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            ms = None if timeout is None else max(int(timeout * 1000), 0)
            if not poller.poll(ms):
                return None
        _, status = os.waitpid(pid, 0)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return os.waitstatus_to_exitcode(status)


def terminate(pid: Pid | int, timeout: float = 10.0) -> int:
    """SIGTERM our child, SIGKILL it if it is still there after ``timeout``; reap it and
    return its exit code."""
    deadline = time.monotonic() + timeout
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    code = wait_exit(pid, max(deadline - time.monotonic(), 0))
    if code is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = wait_exit(pid)
        assert code is not None  # waiting without a timeout always returns a code
    return code
