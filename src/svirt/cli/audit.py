"""``svirt audit search`` and ``svirt audit explain``.

``search`` takes ausearch's own spellings (``-if``, ``-m``, ``-c``, ``-p``, ``-x``, ``-k``,
``-sv``, ``-ts``/``-te``, ``-a``, ``-w``, ``-i``, ``--raw``) and prints what ausearch
prints; ``--json`` gives the events as data. Like ausearch it exits 1 with
``<no matches>`` on stderr when nothing matches. ``explain`` takes the same filters
(default: AVC and USER_AVC events) and explains each distinct denial.
"""

from __future__ import annotations

import argparse
import json
import locale
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from svirt import AuditError, PolicyError, load_config
from svirt.audit import (
    Event,
    ReadStats,
    SearchCriteria,
    boot_time,
    can_write_direct,
    event_to_dict,
    expand_inputs,
    format_event,
    parse_event_id,
    parse_exit,
    parse_gid,
    parse_loginuid,
    parse_message_types,
    parse_pid,
    parse_success,
    parse_syscall,
    parse_time,
    parse_uid,
    search,
    write_direct,
)

if TYPE_CHECKING:
    from svirt.audit import Explanation


__all__ = ["clock", "register", "run_explain", "run_search"]

# The clock the relative time keywords (recent, today, ...) use; tests replace it.
clock: Callable[[], float] = time.time


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except AuditError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = parse.__name__.removeprefix("parse_").replace("_", " ")
    return convert


def _filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ausearch filters (every filter given must match)")
    g.add_argument(
        "-if",
        "--input",
        dest="inputs",
        action="append",
        metavar="FILE",
        help="log file, directory (its audit.log rotated set) or - for stdin; repeatable "
        "(default: the system log and its rotations, oldest first)",
    )
    g.add_argument(
        "--input-logs",
        action="store_true",
        help="read the system logs even when stdin is a pipe",
    )
    g.add_argument(
        "-m",
        "--message",
        dest="types",
        type=_argtype(parse_message_types),
        metavar="TYPE",
        help="record type(s), comma-separated: AVC, USER_AVC, SYSCALL, ... or ALL",
    )
    g.add_argument("-c", "--comm", metavar="COMM", help="command name (substring)")
    g.add_argument("-x", "--executable", dest="exe", metavar="EXE", help="executable (substring)")
    g.add_argument("-k", "--key", metavar="KEY", help="audit rule key (substring)")
    g.add_argument("-p", "--pid", type=_argtype(parse_pid), metavar="PID", help="process id")
    # ausearch's uid/gid selectors (numbers or names; -ul -1 finds an unset auid), kept in
    # command-line order: a later option overrides what an earlier one set, as in ausearch
    uid, gid, auid = _argtype(parse_uid), _argtype(parse_gid), _argtype(parse_loginuid)
    for flags, kind, kind_type, meta, text in (
        (
            ("-ui", "--uid"),
            "uid",
            uid,
            "UID",
            "user id, a number or a name; as in ausearch, a name is compared with the "
            "event's user name (its ENRICHED name when the event is one record or starts with "
            "its SYSCALL, else this machine's passwd); 4294967295 means any",
        ),
        (("-ue", "--uid-effective"), "euid", uid, "UID", "effective user id"),
        (("-ul", "--loginuid"), "loginuid", auid, "AUID", "login uid (auid); -1 for unset"),
        (("-ua", "--uid-all"), "uid_all", uid, "UID", "uid, euid or auid"),
        (("-gi", "--gid"), "gid", gid, "GID", "group id, a number or a name"),
        (("-ge", "--gid-effective"), "egid", gid, "GID", "effective group id"),
        (("-ga", "--gid-all"), "gid_all", gid, "GID", "gid or egid"),
    ):
        g.add_argument(
            *flags,
            action=_IdOption,
            dest="ids",
            const=kind,
            type=kind_type,
            metavar=meta,
            help=text,
        )
    g.add_argument(
        "-sv",
        "--success",
        type=_argtype(parse_success),
        metavar="yes|no",
        help="system call or event success",
    )
    g.add_argument(
        "-sc",
        "--syscall",
        type=_argtype(parse_syscall),
        metavar="SYSCALL",
        help="system call name (this machine's) or number",
    )
    g.add_argument(
        "-e",
        "--exit",
        type=_argtype(parse_exit),
        metavar="EXIT",
        help="system call exit value (number or errno name)",
    )
    g.add_argument(
        "-a",
        "--event",
        dest="event_id",
        type=_argtype(parse_event_id),
        metavar="SERIAL",
        help="event serial number",
    )
    g.add_argument(
        "-ts",
        "--start",
        nargs="+",
        metavar="WHEN",
        help="from: [MM/DD/YY] [HH:MM[:SS]] or recent, now, today, yesterday, this-week, "
        "week-ago, this-month, this-year, boot",
    )
    g.add_argument("-te", "--end", nargs="+", metavar="WHEN", help="until (same forms as -ts)")
    g.add_argument("-w", "--word", action="store_true", help="strings must match whole")
    g.add_argument(
        "--exact",
        action="store_true",
        help="read and group every line in Python (otherwise svirt's compiled core reads plain "
        "log files, and its look-around engine serves -m/-a on other inputs)",
    )


def register(sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audit", parents=[common], help="search audit logs and explain SELinux denials"
    )
    asub = p.add_subparsers(dest="audit_command", metavar="COMMAND")
    asub.required = True

    s = asub.add_parser(
        "search",
        parents=[common],
        help="ausearch-compatible search of raw and enriched logs",
        description="Search audit logs with ausearch's options; prints what ausearch 3.0.9 "
        "prints, byte for byte (--raw, default, -i). Unlike ausearch, svirt also reads several "
        "-if inputs, a directory's rotated set and gzip-compressed logs, and has --json; a line "
        "over 1 MiB is skipped and counted.",
    )
    _filters(s)
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("-i", "--interpret", action="store_true", help="interpret values")
    fmt.add_argument("-r", "--raw", action="store_true", help="the matching lines as logged")
    s.set_defaults(func=run_search)

    e = asub.add_parser(
        "explain",
        parents=[common],
        help="why each SELinux denial happened, and the fix",
        description="Explain each distinct AVC/USER_AVC denial: did SELinux cause it, why "
        "(type enforcement, MCS, boolean, ...), which VM, which file, and the fix that keeps "
        "isolation.",
    )
    _filters(e)
    e.add_argument("--policy", metavar="FILE", help="binary policy (default: the installed one)")
    e.add_argument(
        "--no-policy", action="store_true", help="reason from the contexts only, without a policy"
    )
    e.set_defaults(func=run_explain)


def _stdin_is_pipe() -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(0).st_mode)
    except OSError:
        return False


def _criteria(args: argparse.Namespace, default_types: frozenset[int] | None) -> SearchCriteria:
    now = clock()
    boot = boot_time(now)
    start = parse_time(args.start, end=False, now=now, boot=boot) if args.start else None
    end = parse_time(args.end, end=True, now=now, boot=boot) if args.end else None
    return SearchCriteria(
        types=args.types if args.types is not None else default_types,
        comm=args.comm,
        exe=args.exe,
        key=args.key,
        pid=args.pid,
        **_ids(args),
        success=args.success,
        syscall=None if args.syscall is None else args.syscall[0],
        syscall_arch=0 if args.syscall is None else args.syscall[1],
        exit=args.exit,
        event_id=args.event_id,
        start=start,
        end=end,
        whole_word=args.word,
    )


class _IdOption(argparse.Action):
    """Records (kind, value) in command-line order, for :func:`_ids`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen = list(getattr(namespace, self.dest, None) or [])
        seen.append((self.const, values))
        setattr(namespace, self.dest, seen)


_ID_FIELDS = {
    "uid": ("uid",),
    "euid": ("euid",),
    "loginuid": ("loginuid",),
    "uid_all": ("uid", "euid", "loginuid"),
    "gid": ("gid",),
    "egid": ("egid",),
    "gid_all": ("gid", "egid"),
}


def _ids(args: argparse.Namespace) -> dict[str, Any]:
    """The uid/gid options in order, as ausearch applies them: each sets its fields (-ua
    the uid, euid and login uid, -ga both gids, and those two "or" the tests); a user name
    is kept as a name, which ausearch compares as a name."""
    out: dict[str, Any] = {}
    for kind, value in getattr(args, "ids", None) or []:
        for field in _ID_FIELDS[kind]:
            if isinstance(value, str):
                out[field + "_name"] = value
            else:
                out[field] = value
        if kind in ("uid_all", "gid_all"):
            out[kind] = True
    return out


def _inputs(args: argparse.Namespace) -> list[Any]:
    paths = args.inputs
    if not paths and _stdin_is_pipe() and not args.input_logs:
        paths = ["-"]
    return expand_inputs(paths)


def _warn(stats: ReadStats) -> None:
    summary = stats.summary()
    if summary:
        print(f"warning: {summary}", file=sys.stderr)
    if stats.forced_complete:
        print(
            f"warning: {stats.forced_complete} events were completed early "
            "(too many events open at once)",
            file=sys.stderr,
        )


def _guard_pipe(run: Callable[[], int]) -> int:
    """Run; a closed stdout (``| head``) ends the output quietly."""
    try:
        return run()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _stream_json(out: TextIO, events: Iterator[Event], interpret: bool) -> int:
    count = 0
    out.write("[")
    for ev in events:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(event_to_dict(ev, interpret), indent=None, default=str))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def run_search(args: argparse.Namespace) -> int:
    if args.json and args.raw:
        raise AuditError("--raw and --json are two different outputs: choose one")
    if args.interpret:
        # ausearch prints dates in the user's locale (%x).
        try:
            locale.setlocale(locale.LC_TIME, "")
        except locale.Error:
            pass
    criteria = _criteria(args, None)
    inputs = _inputs(args)
    stats = ReadStats()
    try:
        fd: int | None = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stdout: the generic path
        fd = None
    fmt = "raw" if args.raw else "interpret" if args.interpret else "default"
    if fd is not None and not (args.json or args.exact) and can_write_direct(inputs, fmt):

        def direct() -> int:
            # the compiled core matches and writes the output itself (-i included)
            sys.stdout.flush()
            count = write_direct(inputs, criteria, stats, fmt, fd)
            _warn(stats)
            if not count:
                if not args.raw:
                    print("<no matches>", file=sys.stderr)
                return 1
            return 0

        return _guard_pipe(direct)
    events = search(
        inputs,
        criteria,
        stats,
        engine="exact" if args.exact else "auto",
        jobs=None,
    )

    def go() -> int:
        out = sys.stdout
        if args.json:
            count = _stream_json(out, events, args.interpret)
        else:
            mode = "raw" if args.raw else "interpret" if args.interpret else "default"
            count = 0
            for ev in events:
                out.write(format_event(ev, mode))
                count += 1
        out.flush()
        _warn(stats)
        if not count:
            if not args.raw:
                print("<no matches>", file=sys.stderr)
            return 1
        return 0

    return _guard_pipe(go)


# ---------------------------------------------------------------------------------------
# explain


def _oracle(args: argparse.Namespace, policy_path: Path | None) -> tuple[Any | None, str | None]:
    if args.no_policy:
        return None, "reasoning from the contexts only (--no-policy)"
    from svirt.policy import PolicyOracle, default_policy_path

    path = Path(args.policy) if args.policy else policy_path or default_policy_path()
    if path is None:
        return None, "no binary policy installed: reasoning from the contexts only"
    try:
        return PolicyOracle(path), None
    except PolicyError as exc:
        if args.policy:
            raise
        return None, f"the policy cannot be used ({exc}): reasoning from the contexts only"


def _when(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return f"@{t:.3f}"


def _print_explanation(n: int, x: Explanation, out: TextIO) -> None:
    d = x.denial
    who = d.comm or "?"
    if d.pids:
        who += f" (pid {', '.join(str(p) for p in d.pids[:3])})"
    obj = d.path or d.name or ""
    times = "once" if d.count == 1 else f"{d.count} times"
    span = _when(d.first) if d.count == 1 else f"{_when(d.first)} .. {_when(d.last)}"
    serials = ", ".join(str(s) for s in d.serials[:5]) + (" ..." if len(d.serials) > 5 else "")
    verb = "denied" if d.denied else "granted"
    out.write(
        f"[{n}] {who} {verb} {{ {' '.join(d.perms)} }} on {d.tclass} {obj}\n"
        f"    seen {times}, {span}, serial {serials}\n"
    )
    vm = ""
    if x.vm:
        vm = f"   VM {x.vm} (from {x.vm_source})"
    out.write(f"    process  {d.scontext}{vm}\n")
    owner = f"   labelled for VM {', '.join(x.target_vms)}" if x.target_vms else ""
    out.write(f"    target   {d.tcontext}{owner}\n")
    out.write(f"    SELinux caused it? {x.outcome}\n")
    basis = x.basis + (f": {x.policy_reason}" if x.policy_reason else "")
    out.write(f"    why      {x.why} [{basis}]\n")
    if x.constraint:
        out.write(f"    constraint  {x.constraint}\n")
    if x.mcs is not None:
        if x.mcs.dominates:
            verdict = "dominates"
            tail = ": the categories allow it (MCS is not the cause)"
        else:
            verdict = "does NOT dominate"
            tail = f": the process lacks {x.mcs.missing}" if x.mcs.missing else ""
        out.write(
            f"    levels   process {x.mcs.source_level} {verdict} target {x.mcs.target_level}"
            f"{tail}\n"
        )
    f = x.file
    if f is not None:
        if not f.exists:
            state = f"not found on this host ({f.error})" if f.error else "not found on this host"
        else:
            state = f"now {f.label or '(no label)'}"
            r = f.remembered
            if r is not None and r.label is not None:
                state += f"; remembered original {r.label}, refcount {r.refcount}"
                if r.timestamp is not None:
                    state += f", since boot at {_when(r.timestamp)}"
            else:
                state += "; no remembered label (trusted.libvirt.security.selinux absent)"
        out.write(f"    file     {f.path} (from {f.how}): {state}\n")
    elif d.name and not d.path:
        hint = f" -inum {d.ino}" if d.ino else f" -name '{d.name}'"
        out.write(
            f"    file     only its name is in the log ({d.name} on {d.dev or '?'}); find it "
            f"with: find / -xdev{hint} 2>/dev/null\n"
        )
    for i, fix in enumerate(x.fixes):
        label = "fix" if i == 0 else "   "
        out.write(f"    {label}      {fix.text}\n")
        if fix.command:
            out.write(f"               {fix.command}\n")
    if x.do_not:
        out.write(f"    never    {x.do_not}\n")
    for note in x.notes:
        out.write(f"    note     {note}\n")
    out.write("\n")


def run_explain(args: argparse.Namespace) -> int:
    from svirt.audit import explain_events, load_live_domains, msg_type_id

    cfg = load_config(args.config)
    criteria = _criteria(args, frozenset({msg_type_id("AVC"), msg_type_id("USER_AVC")}))
    inputs = _inputs(args)
    oracle, policy_note = _oracle(args, cfg.policy_path)
    domains = load_live_domains(cfg.state_dir, cfg.libvirt_run_dir)
    stats = ReadStats()
    events = search(
        inputs,
        criteria,
        stats,
        engine="exact" if args.exact else "auto",
        jobs=None,
    )
    explanations = explain_events(events, oracle=oracle, domains=domains)

    def go() -> int:
        out = sys.stdout
        if args.json:
            json.dump(
                {
                    "policy": str(oracle.path) if oracle is not None else None,
                    "policy_note": policy_note,
                    "domains": [d.name for d in domains],
                    "denials": [x.to_dict() for x in explanations],
                },
                out,
                indent=2,
                default=str,
            )
            out.write("\n")
        else:
            if policy_note:
                out.write(f"note: {policy_note}\n\n")
            if not explanations:
                out.write("no SELinux denials in the events searched\n")
            for n, x in enumerate(explanations, 1):
                _print_explanation(n, x, out)
        out.flush()
        _warn(stats)
        return 0

    return _guard_pipe(go)
