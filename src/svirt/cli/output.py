"""Printing helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Outcome", "outcome_lines", "print_json", "print_outcomes", "table"]


class Outcome(Protocol):
    """What the library's per-resource outcomes offer (``svirt.security.report``)."""

    @property
    def resource(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def text(self) -> str: ...


def outcome_lines(outcomes: Iterable[Outcome], indent: str = "  ") -> list[str]:
    """One heading per resource and path, then each driver's outcome in the library's
    words (issue 14: what happened to each resource)."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.resource, o.path), []).append(o)
    out: list[str] = []
    for (resource, path), group in groups.items():
        out.append(f"{indent}{resource}  {path}")
        out.extend(f"{indent}  {o.driver:<8}{o.text}" for o in group)
    return out


def print_outcomes(outcomes: Iterable[Outcome]) -> None:
    for line in outcome_lines(outcomes):
        print(line)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(rows: list[list[str]], header: list[str] | None = None) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    all_rows = ([header] if header else []) + rows
    if not all_rows:
        return ""
    widths = [max(len(r[i]) for r in all_rows if i < len(r)) for i in range(len(all_rows[0]))]
    lines = []
    for r in all_rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
