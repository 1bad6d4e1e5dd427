"""DAC access as another identity, decided by the kernel (not by reading mode bits).

libvirt checks that the QEMU user can reach a file by forking a child that takes the
QEMU identity and tries (``virFileAccessibleAs``). :func:`access_as` does the same:
a child drops to the identity (supplementary groups, gid, uid) and calls ``access(2)``
for each path, so mode bits, POSIX ACLs and every parent directory's search permission
count exactly as they will for QEMU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from svirt.host.ids import Identity

__all__ = ["access_as"]


def access_as(identity: Identity, checks: Sequence[tuple[str, int]]) -> list[int]:
    """For each ``(path, mode)`` (``os.R_OK | os.W_OK | os.X_OK`` bits), 0 when
    ``identity`` may access ``path`` so, else the errno ``access(2)`` gave. Root's
    identity is answered without a child (root passes every DAC check)."""
    if not checks:
        return []
    if identity.uid == 0:
        return [0 if os.path.lexists(p) else 2 for p, _ in checks]
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            os.setgroups([int(g) for g in identity.groups])
            os.setresgid(identity.gid, identity.gid, identity.gid)
            os.setresuid(identity.uid, identity.uid, identity.uid)
            out: list[int] = []
            for path, mode in checks:
                try:
                    out.append(0 if os.access(path, mode) else _errno(path, mode))
                except OSError as exc:
                    out.append(exc.errno or 13)
            os.write(w, json.dumps(out).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not chunks:
        raise OSError(f"cannot check access as {identity}")
    result: list[int] = json.loads(b"".join(chunks))
    return result


def _errno(path: str, mode: int) -> int:  # pragma: no cover - child
    """access(2) said no: why (EACCES for a permission, ENOENT for a missing path)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno or 13
    return 13
