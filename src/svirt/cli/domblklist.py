"""``svirt domblklist NAME [--details]``: a domain's disks, in ``virsh domblklist``'s layout."""

from __future__ import annotations

import argparse
import dataclasses
import unicodedata
from collections.abc import Sequence
from typing import Any

import svirt

from .output import print_json

__all__ = ["register", "vsh_table"]


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "domblklist",
        parents=[common],
        help="list a domain's disks: target and source, like virsh domblklist",
        description="List the block devices of a running or labelled domain in virsh "
        "domblklist's layout: one row per disk with its target and source, '-' for a drive "
        "without media. Hotplugged disks are included.",
    )
    p.add_argument("name", metavar="NAME", help="domain name")
    p.add_argument("--details", action="store_true", help="also show each disk's type and device")
    p.set_defaults(func=run)


def _cell(text: str) -> tuple[str, int]:
    """A cell as virsh's table prints it (vshTableSafeEncode) and its width in columns:
    control characters, and a backslash starting ``\\x``, become ``\\xNN``."""
    out: list[str] = []
    width = 0
    for i, ch in enumerate(text):
        code = ord(ch)
        if code < 0x20 or code == 0x7F or (ch == "\\" and text[i + 1 : i + 2] == "x"):
            out.append(f"\\x{code:02x}")
            width += 4
        elif code < 0x80:
            out.append(ch)
            width += 1
        elif not ch.isprintable():
            for byte in ch.encode("utf-8", "surrogateescape"):
                out.append(f"\\x{byte:02x}")
                width += 4
        else:
            out.append(ch)
            if unicodedata.combining(ch):
                continue
            width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return "".join(out), width


def vsh_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """virsh's table (tools/vsh-table.c): each cell after one space, columns two spaces
    apart, the last one unpadded, a dashed line three columns wider than each column."""
    cells = [[_cell(c) for c in row] for row in [header, *rows]]
    widths = [max(row[i][1] for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = []
        for i, (text, width) in enumerate(row):
            pad = " " * (widths[i] - width + 2) if i < len(row) - 1 else ""
            parts.append(f" {text}{pad}")
        lines.append("".join(parts))
        if n == 0:
            lines.append("-" * sum(w + 3 for w in widths))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    disks = svirt.Host(args.config).domain(args.name).block_devices()
    if args.json:
        print_json([dataclasses.asdict(d) for d in disks])
        return 0
    if args.details:
        header = ["Type", "Device", "Target", "Source"]
        rows = [[d.type, d.device, d.target, d.source or "-"] for d in disks]
    else:
        header = ["Target", "Source"]
        rows = [[d.target, d.source or "-"] for d in disks]
    # virsh ends every command's output with an empty line (outside --quiet); scripts
    # that read virsh's output get the same bytes.
    print(vsh_table(header, rows))
    return 0
