"""``svirt demo``: a guided tour of what svirt does, on files it creates and removes."""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

from svirt.conf import load_config
from svirt.domain import parse_domain
from svirt.security.manager import check_domain, default_model

from .validate import security_view

__all__ = ["register"]

_DOMAIN = """\
<domain type='kvm'>
  <name>demo-vm1</name>
  <memory unit='MiB'>64</memory>
  <seclabel type='dynamic' model='selinux'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{d}/vm1.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='{d}/shared.img'/>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='{d}/install.iso'/>
      <target dev='hdc' bus='ide'/>
    </disk>
    <serial type='file'><source path='{d}/console.log'/><target port='0'/></serial>
  </devices>
</domain>
"""


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="a guided tour of svirt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.config is None:
        # The tour shows the SELinux driver even on a host where SELinux is off.
        cfg = replace(cfg, security_driver=("selinux",))
    with tempfile.TemporaryDirectory(prefix="svirt-demo-") as tmp:
        d = Path(tmp)
        xml = _DOMAIN.format(d=d)
        print("== A domain XML, as libvirt would take it:")
        print(textwrap.indent(xml, "   "))
        domain = parse_domain(xml, default_model=default_model(cfg), source="demo-vm1.xml")
        check_domain(domain, cfg)
        print("== Its security view (svirt validate):")
        for r in security_view(domain)["resources"]:
            flags = ",".join(r["flags"]) or "private"
            print(f"   {r['owner']:<8} {r['path']:<40} {flags}")
    print("\nThe demo grows with each capability: labelling, lifecycle, audit, policy.")
    return 0
