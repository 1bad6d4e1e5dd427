"""``svirt verify --html FILE``: the isolation matrix as one self-contained page.

The page is plain HTML with inline CSS: no script, no external resource (its
Content-Security-Policy forbids both), so it opens the same anywhere, offline. Every name,
path, label and log text is user data and is escaped.

What it shows:
- the isolation matrix: one row per running VM, one column per resource of every running
  VM (grouped by owner); each cell is filled with the colour of the policy's decision for
  that VM on that resource (:class:`~svirt.policy.verify.CellAccess`), its reason and the
  DAC layer in the cell's ``title`` (on hover); a finding (isolation broken) is ringed in
  red, a VM that cannot use its own resource in orange, a cell where DAC alone lets the
  QEMU in carries a black corner;
- a legend, whether SELinux is enforced, the pairs with both layers (``with_layers``),
  the findings, sharing, own-resource denials, boolean risks, notes;
- with an audit log, the denial timeline of ``svirt audit explain`` (time, VM, what was
  denied, cause, fix).

The matrix has a fixed geometry (:data:`CELL`, …): each cell's centre in page
coordinates is in its ``data-cx``/``data-cy`` attributes, so a screenshot can be checked
pixel by pixel against ``svirt verify --json`` (tests/test_verify_html.py does, in
headless Chromium).
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from svirt.policy.verify import CellAccess, IsolationMatrix, MatrixCell, VerifyReport

if TYPE_CHECKING:
    from svirt.audit.explain import Explanation
    from svirt.policy.oracle import PolicyOracle

__all__ = [
    "CELL",
    "FILL",
    "HEAD_HEIGHT",
    "denial_timeline",
    "render_page",
]

#: The fill colour of each decision (sRGB hex), also the legend's.
FILL: dict[CellAccess, str] = {
    CellAccess.READ_WRITE: "#1d4e89",
    CellAccess.READ: "#7fb3e0",
    CellAccess.NONE: "#e4e4e4",
    CellAccess.UNKNOWN: "#8c6d46",
}
_MEANING = {
    CellAccess.READ_WRITE: "read/write: the policy lets the VM read and write it",
    CellAccess.READ: "read: the policy lets the VM read it, not write it",
    CellAccess.NONE: "none: the policy denies even reading it",
    CellAccess.UNKNOWN: "not decided: the file cannot be examined, or the VM is not confined",
}
_CLASS = {
    CellAccess.READ_WRITE: "rw",
    CellAccess.READ: "r",
    CellAccess.NONE: "no",
    CellAccess.UNKNOWN: "unk",
}
FINDING_RING = "#d62728"
OWN_DENIAL_RING = "#ff7f0e"

# Geometry of the matrix, in CSS pixels (the page is laid out at scale 1).
HEAD_HEIGHT = 84  # the page's header above the matrix
CELL = 30  # a cell's pitch (the filled square is CELL - 2)
GROUP_HEIGHT = 24  # the owner's name above its columns
COLUMN_HEIGHT = 170  # the resources' names, written upwards
ROW_WIDTH = 230  # the VMs' names
GAP = 12  # between two owners' columns
LEFT = 12


def e(text: object) -> str:
    """Escape for text and double-quoted attributes."""
    return html.escape(str(text), quote=True)


_CSS = f"""
* {{ box-sizing: border-box; }}
html, body {{ margin: 0; padding: 0; background: #ffffff; color: #1a1a1a;
  font: 13px/1.4 "DejaVu Sans", Arial, sans-serif; }}
#head {{ height: {HEAD_HEIGHT}px; overflow: hidden; padding: 8px {LEFT}px;
  border-bottom: 1px solid #cccccc; }}
#head h1 {{ font-size: 18px; margin: 0 0 4px 0; white-space: nowrap; }}
#head p {{ margin: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.ok {{ color: #1b7a1b; font-weight: bold; }}
.bad {{ color: #b00000; font-weight: bold; }}
#matrix {{ position: relative; overflow: hidden; }}
#matrix div {{ position: absolute; overflow: hidden; }}
.group {{ height: {GROUP_HEIGHT - 4}px; border-bottom: 2px solid #555555; font-weight: bold;
  white-space: nowrap; text-overflow: ellipsis; }}
.col {{ width: {CELL}px; height: {COLUMN_HEIGHT}px; }}
.col span {{ position: absolute; left: 6px; bottom: 4px; writing-mode: vertical-rl;
  transform: rotate(180deg); white-space: nowrap; font-size: 12px;
  max-height: {COLUMN_HEIGHT - 8}px; overflow: hidden; text-overflow: ellipsis; }}
.row {{ width: {ROW_WIDTH - 8}px; height: {CELL}px; line-height: {CELL}px; white-space: nowrap;
  text-overflow: ellipsis; text-align: right; padding-right: 6px; font-weight: bold; }}
.cell {{ width: {CELL - 2}px; height: {CELL - 2}px; }}
{"".join(f".{_CLASS[a]} {{ background: {c}; }}" for a, c in FILL.items())}
.finding {{ box-shadow: inset 0 0 0 4px {FINDING_RING}; }}
.owndenial {{ box-shadow: inset 0 0 0 4px {OWN_DENIAL_RING}; }}
#matrix .dac::after {{ content: ""; position: absolute; right: 0; bottom: 0;
  border-left: 10px solid transparent; border-bottom: 10px solid #000000; }}
main {{ padding: 8px {LEFT}px 24px {LEFT}px; max-width: 1400px; }}
h2 {{ font-size: 15px; margin: 18px 0 6px 0; border-bottom: 1px solid #dddddd; }}
.swatch {{ display: inline-block; width: 16px; height: 16px; vertical-align: middle;
  margin-right: 6px; border: 1px solid #999999; }}
ul.legend {{ list-style: none; padding: 0; margin: 0; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #cccccc; padding: 3px 6px; vertical-align: top; text-align: left; }}
td.okcell {{ background: #e3f3e3; }}
td.badcell {{ background: #f8dddd; }}
code {{ font-family: "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }}
"""


def _cell_center(x: int, y: int) -> tuple[int, int]:
    return x + (CELL - 2) // 2, y + (CELL - 2) // 2


def _matrix(m: IsolationMatrix) -> tuple[str, int, int]:
    """The matrix's HTML, its width and its height."""
    out: list[str] = []
    x0 = LEFT + ROW_WIDTH
    y0 = GROUP_HEIGHT + COLUMN_HEIGHT
    xs: list[int] = []
    x = x0
    for owner in m.owners:
        cols = [r for r in m.columns if r.domain == owner]
        width = len(cols) * CELL
        out.append(
            f'<div class="group" style="left:{x}px;top:0;width:{width - 2}px" '
            f'title="{e(owner)}">{e(owner)}</div>'
        )
        for r in cols:
            title = f"{r.domain}'s {r.owner} {r.path} labelled {r.label or '-'}"
            if r.problem:
                title += f" ({r.problem})"
            shown = f"{r.owner} {os.path.basename(r.path) or r.path}"
            out.append(
                f'<div class="col" style="left:{x}px;top:{GROUP_HEIGHT}px" '
                f'title="{e(title)}"><span>{e(shown)}</span></div>'
            )
            xs.append(x)
            x += CELL
        x += GAP
    width = max(x, x0) + LEFT
    for i, subject in enumerate(m.rows):
        y = y0 + i * CELL
        out.append(
            f'<div class="row" style="left:{LEFT}px;top:{y}px" title="{e(subject)}">'
            f"{e(subject)}</div>"
        )
        for j, cell in enumerate(m.row(subject)):
            out.append(_cell_html(cell, xs[j], y))
    height = y0 + len(m.rows) * CELL + 8
    return "".join(out), width, height


def _cell_html(cell: MatrixCell, x: int, y: int) -> str:
    classes = ["cell", _CLASS[cell.access]]
    if cell.finding:
        classes.append("finding")
    if cell.own_denial:
        classes.append("owndenial")
    if cell.dac is not None:
        classes.append("dac")
    cx, cy = _cell_center(x, y + HEAD_HEIGHT)
    r = cell.resource
    title = f"SELinux: {cell.access.value}. {cell.reason}\n{cell.dac_reason}"
    return (
        f'<div class="{" ".join(classes)}" style="left:{x}px;top:{y}px" '
        f'data-subject="{e(cell.subject)}" data-domain="{e(r.domain)}" '
        f'data-path="{e(r.path)}" data-access="{cell.access.value}" '
        f'data-dac="{e(cell.dac or "none")}" data-cx="{cx}" data-cy="{cy}" '
        f'title="{e(title)}"></div>'
    )


def _legend() -> str:
    items = [
        f'<li><span class="swatch" style="background:{FILL[a]}"></span>{e(_MEANING[a])}</li>'
        for a in CellAccess
    ]
    items.append(
        f'<li><span class="swatch" style="box-shadow: inset 0 0 0 4px {FINDING_RING}"></span>'
        "red ring: isolation broken (the VM reaches another VM's private resource)</li>"
    )
    items.append(
        f'<li><span class="swatch" style="box-shadow: inset 0 0 0 4px {OWN_DENIAL_RING}">'
        "</span>orange ring: the VM cannot use its own resource (it will fail)</li>"
    )
    items.append(
        '<li><span class="swatch" style="background: linear-gradient(135deg, #ffffff 50%, '
        "#000000 50%)\"></span>black corner: plain DAC (owner, mode, ACL) lets the VM's "
        "QEMU open it: only SELinux stands in the way</li>"
    )
    return (
        "<h2>Legend</h2><p>Rows: running VMs. Columns: every resource of every running VM, "
        "grouped by the VM that owns it. A cell is the SELinux policy's decision for that "
        "VM's process label on the resource's label as it is on disk now; hover a cell for "
        'its reason and the DAC layer.</p><ul class="legend">' + "".join(items) + "</ul>"
    )


def _pairs(report: VerifyReport) -> str:
    if report.pairs is None:
        return ""
    if not report.pairs:
        return "<h2>Both layers, pair by pair</h2><p>fewer than two running VMs</p>"
    rows = []
    for p in report.pairs:
        policy = "denies" if p.selinux_policy_denies else "allows"
        enforced = "enforced" if p.selinux_enforced else "not enforced"
        dac = "denies" if p.dac_denies else "allows"
        verdict = "isolated" if p.separated else "NOT isolated"
        rows.append(
            f"<tr><td>{e(p.subject)}</td><td>{e(p.target)}</td><td>{policy}</td>"
            f'<td>{enforced}</td><td>{dac}</td><td class="{"okcell" if p.separated else "badcell"}'
            f'" title="{e(p.describe())}">{verdict}</td></tr>'
        )
    return (
        "<h2>Both layers, pair by pair</h2><table><tr><th>VM</th><th>other VM</th>"
        "<th>SELinux policy</th><th>SELinux enforced?</th><th>DAC</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _list(title: str, items: Sequence[str]) -> str:
    if not items:
        return ""
    return f"<h2>{e(title)}</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _findings(report: VerifyReport) -> str:
    parts = [
        _list("Isolation findings (SELinux policy)", [e(f.explanation) for f in report.findings])
    ]
    if not report.findings:
        parts.append(
            "<h2>Isolation findings (SELinux policy)</h2><p>none: the policy keeps every "
            "running VM from every other's private resources</p>"
        )
    shared = []
    for s in report.shared:
        r = s.resource
        shared.append(
            f"{e(r.domain)} {e(r.owner)} <code>{e(r.path)}</code> labelled "
            f"<code>{e(r.label or '-')}</code>: " + e(s.users)
        )
    parts.append(_list("Sharing (declared read-only or shareable)", shared))
    parts.append(
        _list(
            "Own resources a VM cannot use (the VM will fail)",
            [
                f"{e(o.domain)} cannot {e(o.access.value)} its {e(o.resource.owner)} "
                f"<code>{e(o.resource.path)}</code> labelled <code>{e(o.resource.label)}</code>: "
                f"{e(o.decision.describe())}"
                for o in report.own_denials
            ],
        )
    )
    parts.append(
        _list(
            "DAC allows now",
            [
                f"{e(a.subject)} ({e(a.identity)}) can "
                + (
                    f"read {e(a.target)}'s memory"
                    if a.what == "memory"
                    else f"{e(a.what)} {e(a.target)}'s"
                )
                + f" <code>{e(a.path)}</code>: {e(a.why)}"
                for a in report.dac
            ],
        )
    )
    parts.append(
        _list(
            "Denied now, allowed if a boolean changes",
            [
                f"{e(b.subject)} could {e(b.access.value)} {e(b.resource.domain)}'s "
                f"<code>{e(b.resource.path)}</code> if "
                + e(" or ".join(f"{n}={'on' if v else 'off'}" for n, v in b.booleans))
                for b in report.boolean_risks
            ],
        )
    )
    parts.append(
        _list(
            "Notes",
            [
                f"{e(r.domain)} {e(r.owner)} <code>{e(r.path)}</code>: {e(r.problem)}"
                for r in report.resources
                if r.problem
            ],
        )
    )
    parts.append(
        _list(
            "Skipped",
            [f"<code>{e(s.path)}</code>: {e(s.reason)}" for s in report.skipped],
        )
    )
    return "".join(parts)


def _when(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return f"@{t:.3f}"


def _timeline(explanations: Sequence[Explanation], source: str) -> str:
    head = f"<h2>Denial timeline ({e(source)})</h2>"
    if not explanations:
        return head + "<p>no SELinux denials in the log</p>"
    rows = []
    for x in sorted(explanations, key=lambda x: (x.denial.first, x.denial.serials)):
        d = x.denial
        when = _when(d.first) if d.count == 1 else f"{_when(d.first)} .. {_when(d.last)}"
        times = "" if d.count == 1 else f" ({d.count} times)"
        what = (
            f"{d.comm or '?'} {'denied' if d.denied else 'granted'} "
            f"{{ {' '.join(d.perms)} }} on {d.tclass} {d.path or d.name or ''}"
        )
        target = f" (labelled for VM {', '.join(x.target_vms)})" if x.target_vms else ""
        fixes = "".join(
            f"<div>{e(f.text)}"
            + (f"<br><code>{e(f.command)}</code>" if f.command else "")
            + "</div>"
            for f in x.fixes
        )
        if x.do_not:
            fixes += f"<div><b>never</b> {e(x.do_not)}</div>"
        rows.append(
            f"<tr><td>{e(when + times)}</td><td>{e(x.vm or '?')}</td>"
            f"<td>{e(what)}<br><code>{e(d.scontext)}</code> &rarr; "
            f"<code>{e(d.tcontext)}</code>{e(target)}</td>"
            f"<td><b>{e(x.cause.value)}</b>: {e(x.why)}<br>{e(x.outcome)}</td>"
            f"<td>{fixes}</td></tr>"
        )
    return (
        head + "<table><tr><th>time</th><th>VM</th><th>denied</th><th>cause</th>"
        "<th>fix</th></tr>" + "".join(rows) + "</table>"
    )


def render_page(
    report: VerifyReport,
    *,
    timeline: Sequence[Explanation] | None = None,
    timeline_source: str = "audit log",
) -> str:
    """The whole page for a report made by :func:`svirt.policy.verify.verify` (which
    computes the matrix); ``timeline``: explained denials to list by time."""
    m = report.matrix
    n = len(m.rows) if m is not None else len(report.domains)
    enforcing = (
        '<span class="ok">SELinux is enforced on this host</span>'
        if report.selinux_enforcing
        else '<span class="bad">SELinux is NOT enforced on this host</span> (the policy '
        "decides nothing until it is; DAC is the only layer in force)"
    )
    verdict = (
        '<span class="ok">isolated</span>: every running VM is kept from every other by a '
        "layer in force"
        if report.separated
        else '<span class="bad">NOT isolated</span>'
    )
    policy = "isolation OK" if report.isolated else f"{len(report.findings)} finding(s)"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>svirt verify: {n} running VM{'s' if n != 1 else ''}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<div id="head"><h1>svirt verify: isolation of {n} running VM{"s" if n != 1 else ""}</h1>',
        f'<p id="enforcing">{enforcing}</p>',
        f'<p id="verdict">{verdict}; SELinux policy: {e(policy)}; policy '
        f"<code>{e(report.policy)}</code> ({e(report.backend)})</p></div>",
    ]
    if m is None or not m.rows:
        parts.append('<div id="matrix" style="height:40px"><p>no running domains</p></div>')
    else:
        body, width, height = _matrix(m)
        parts.append(f'<div id="matrix" style="width:{width}px;height:{height}px">{body}</div>')
    parts.append("<main>")
    parts.append(_legend())
    parts.append(_pairs(report))
    parts.append(_findings(report))
    if timeline is not None:
        parts.append(_timeline(timeline, timeline_source))
    parts.append("</main></body></html>\n")
    return "".join(parts)


def denial_timeline(
    logs: Iterable[str | os.PathLike[str]],
    *,
    oracle: PolicyOracle | None,
    state_dir: Path,
    libvirt_run_dir: Path,
    names: Sequence[str] | None = None,
) -> list[Explanation]:
    """``svirt audit explain -if LOG``'s explanations (AVC and USER_AVC), oldest first;
    with ``names``, only denials of those VMs or on their files."""
    from svirt.audit.explain import explain
    from svirt.audit.owners import load_live_domains
    from svirt.audit.reader import expand_inputs, msg_type_id
    from svirt.audit.search import SearchCriteria, search

    inputs = expand_inputs([os.fspath(p) for p in logs])
    criteria = SearchCriteria(types=frozenset({msg_type_id("AVC"), msg_type_id("USER_AVC")}))
    domains = load_live_domains(state_dir, libvirt_run_dir)
    found = explain(search(inputs, criteria, engine="exact"), oracle=oracle, domains=domains)
    if names:
        found = [x for x in found if x.vm in names or set(x.target_vms) & set(names)]
    return sorted(found, key=lambda x: (x.denial.first, x.denial.serials))
