"""Helpers of the adversarial suite: real images where the QEMU user can reach them,
domain XML, and stopping whatever a test started (by name, through svirt)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fsutil import image_dir as fsutil_image_dir
from fsutil import make_file
from fsutil import stop_all as stop_all  # re-exported: the adversarial tests import it here


def vm_xml(name: str, disks: list[str], extra: str = "") -> str:
    esc = name.replace("&", "&amp;").replace("<", "&lt;")
    return (
        f"<domain type='qemu'><name>{esc}</name><memory unit='MiB'>32</memory>"
        f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>{extra}"
        f"<devices>{''.join(disks)}</devices></domain>"
    )


def disk(path: Path | str, target: str, *, fmt: str = "raw", flags: str = "") -> str:
    esc = str(path).replace("&", "&amp;").replace("'", "&apos;")
    esc = esc.replace("\n", "&#10;").replace("\t", "&#9;")
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{esc}'/><target dev='{target}' bus='virtio'/>{flags}</disk>"
    )


def image(d: Path, name: str, *, size: int = 1 << 20, **kw: object) -> Path:
    p = make_file(d / name, **kw)  # type: ignore[arg-type]
    os.truncate(p, size)
    return p


@contextmanager
def image_dir() -> Iterator[Path]:
    """A directory under /var/tmp, 0755 (the chown DAC mode does not open up parents)."""
    with fsutil_image_dir("svirt-adv-") as d:
        yield d


def wait_until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False
