"""How long the interop suite's libvirt takes (issue 12): libvirtd ready in its private
namespace, and one tiny domain created and destroyed. Prints seconds per run."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "interop"))

from libvirt_ns import LibvirtNamespace


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    for i in range(runs):
        ns = LibvirtNamespace()
        try:
            ns.open()
            ready = ns.start_daemons()
            img = ns.images / "a.img"
            img.write_bytes(b"\0")
            os.truncate(img, 1 << 20)
            xml = ns.root / "bench.xml"
            xml.write_text(
                "<domain type='qemu'><name>bench</name><memory unit='MiB'>32</memory>"
                "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
                f"<disk type='file' device='disk'><source file='{img}'/>"
                "<target dev='vda' bus='virtio'/></disk></devices></domain>"
            )
            t0 = time.monotonic()
            ns.virsh("create", str(xml))
            t1 = time.monotonic()
            ns.virsh("destroy", "bench")
            t2 = time.monotonic()
            print(
                f"run {i + 1}: libvirtd ready {ready:.1f} s, virsh create {t1 - t0:.2f} s, "
                f"destroy {t2 - t1:.2f} s"
            )
        finally:
            ns.close()


if __name__ == "__main__":
    main()
