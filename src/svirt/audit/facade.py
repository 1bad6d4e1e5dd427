"""The public entry points of :mod:`svirt.audit`: search and explain from paths and
ausearch-like criteria.

:func:`search` and :func:`explain` are what a program calls (``svirt.audit.search(...)``);
they take log files (or :class:`~svirt.audit.reader.LogInput`) and either a
:class:`~svirt.audit.search.SearchCriteria` or keyword filters named as its fields, with
ausearch's spellings accepted for values (``types="AVC,USER_AVC"``, ``start="recent"``,
``uid="root"``, ``syscall="openat"``). Every failure is an :class:`~svirt.errors.AuditError`
(or :class:`~svirt.errors.PolicyError` for a policy that cannot be used).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svirt.audit.events import Event
from svirt.audit.reader import LogInput, ReadStats, expand_inputs, msg_type_id
from svirt.audit.search import (
    SearchCriteria,
    boot_time,
    parse_exit,
    parse_gid,
    parse_loginuid,
    parse_message_types,
    parse_success,
    parse_syscall,
    parse_time,
    parse_uid,
)
from svirt.errors import AuditError

if TYPE_CHECKING:
    from svirt.audit.explain import Explanation
    from svirt.audit.owners import LiveDomain
    from svirt.conf import Config
    from svirt.policy.oracle import PolicyOracle

__all__ = [
    "LogSource",
    "can_write_direct",
    "criteria",
    "explain",
    "explain_events",
    "search",
    "write_direct",
]

#: What :func:`search` reads: a path, a :class:`LogInput`, several of them, or None for
#: the system log and its rotations (``-`` is standard input; a directory is its
#: ``audit.log`` rotated set).
LogSource = str | os.PathLike[str] | LogInput | Sequence[str | os.PathLike[str] | LogInput] | None

_FIELDS = frozenset(f.name for f in dataclasses.fields(SearchCriteria))
_DENIALS = ("AVC", "USER_AVC")


def _inputs(source: LogSource) -> list[LogInput]:
    if source is None:
        return expand_inputs(None)
    items: Sequence[str | os.PathLike[str] | LogInput] = (
        [source] if isinstance(source, str | os.PathLike | LogInput) else source
    )
    out: list[LogInput] = []
    for item in items:
        if isinstance(item, LogInput):
            out.append(item)
        else:
            out.extend(expand_inputs([os.fspath(item)]))
    return out


def _types(value: Any) -> frozenset[int] | None:
    if value is None or (
        isinstance(value, frozenset | set) and all(isinstance(v, int) for v in value)
    ):
        return None if value is None else frozenset(value)
    if isinstance(value, str):
        return parse_message_types(value)
    out: set[int] = set()
    for item in value:
        if isinstance(item, int):
            out.add(item)
        elif (num := msg_type_id(str(item))) >= 0:
            out.add(num)
        else:
            raise AuditError(f"unknown message type '{item}' (try AVC, USER_AVC, SYSCALL, ...)")
    return frozenset(out)


def _when(value: Any, *, end: bool) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    words = value.split() if isinstance(value, str) else list(value)
    now = time.time()
    return parse_time(words, end=end, now=now, boot=boot_time(now))


def criteria(**filters: Any) -> SearchCriteria:
    """A :class:`SearchCriteria` from keyword filters named as its fields.

    Values may be given as ausearch spells them: ``types`` a comma list or names
    (``"AVC,USER_AVC"``, ``["AVC"]``) or numbers; ``start``/``end`` epoch seconds or
    ausearch's time words (``"recent"``, ``"today"``, ``"12/05/25 10:00"``); ``uid``,
    ``euid``, ``loginuid`` a number or a user name; ``gid``/``egid`` a number or a group
    name; ``syscall`` a number or this machine's name; ``exit`` a number or an errno name;
    ``success`` a bool or ``"yes"``/``"no"``. Raises :class:`AuditError` for an unknown
    filter or a bad value.
    """
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if key not in _FIELDS:
            raise AuditError(f"unknown search criterion '{key}'")
        if key == "types":
            out[key] = _types(value)
        elif key in ("start", "end"):
            out[key] = _when(value, end=key == "end")
        elif key in ("uid", "euid", "loginuid") and isinstance(value, str):
            parsed = (parse_loginuid if key == "loginuid" else parse_uid)(value)
            out[key + "_name" if isinstance(parsed, str) else key] = parsed
        elif key in ("gid", "egid") and isinstance(value, str):
            out[key] = parse_gid(value)
        elif key == "syscall" and isinstance(value, str):
            out["syscall"], out["syscall_arch"] = parse_syscall(value)
        elif key == "exit" and isinstance(value, str):
            out[key] = parse_exit(value)
        elif key == "success" and isinstance(value, str):
            out[key] = parse_success(value)
        else:
            out[key] = value
    return SearchCriteria(**out)


def _merged(base: SearchCriteria | None, filters: dict[str, Any]) -> SearchCriteria:
    if base is None:
        return criteria(**filters)
    if not filters:
        return base
    extra = criteria(**filters)
    given = {
        k: getattr(extra, k) for k in _FIELDS if getattr(extra, k) != getattr(SearchCriteria(), k)
    }
    return dataclasses.replace(base, **given)


def search(
    inputs: LogSource = None,
    where: SearchCriteria | None = None,
    stats: ReadStats | None = None,
    *,
    engine: str = "auto",
    jobs: int | None = 1,
    **filters: Any,
) -> Iterator[Event]:
    """The events of ``inputs`` that match, as ausearch finds them, in log order.

    ``where`` is a :class:`SearchCriteria`; keyword ``filters`` (see :func:`criteria`) are
    added to it. ``stats``, when given, counts lines, records and what was skipped.
    ``engine``: ``"auto"`` (the compiled core on plain files, else the fastest exact
    engine), ``"exact"``, ``"fast"`` or ``"native"``. ``jobs``: processes the fast engine
    may use on a large file; None picks (one when the compiled core serves).
    """
    sources = _inputs(inputs)
    crit = _merged(where, filters)
    if jobs is None:
        from svirt.audit import native
        from svirt.audit.fastscan import parallel_jobs

        jobs = 1 if native.usable(sources) else parallel_jobs(sources)
    from svirt.audit.search import search as _search

    return _search(sources, crit, stats, engine=engine, jobs=jobs)


def explain_events(
    events: Iterable[Event],
    *,
    oracle: PolicyOracle | None = None,
    domains: Sequence[LiveDomain] = (),
    inspect_files: bool = True,
) -> list[Explanation]:
    """Explain each distinct denial among ``events`` (already searched), with ``oracle``'s
    policy (None: from the contexts only) and the running ``domains``."""
    from svirt.audit.explain import explain as _explain

    return _explain(events, oracle=oracle, domains=domains, inspect_files=inspect_files)


def _oracle(
    policy: PolicyOracle | str | os.PathLike[str] | bool, configured: Path | None
) -> PolicyOracle | None:
    from svirt.policy.oracle import PolicyOracle, default_policy_path

    if policy is False:
        return None
    if isinstance(policy, PolicyOracle):
        return policy
    if policy is True:
        path = configured or default_policy_path()
        return None if path is None else PolicyOracle(path)
    return PolicyOracle(Path(policy))


def explain(
    inputs: LogSource = None,
    where: SearchCriteria | None = None,
    stats: ReadStats | None = None,
    *,
    policy: PolicyOracle | str | os.PathLike[str] | bool = True,
    config: Config | str | os.PathLike[str] | None = None,
    domains: Sequence[LiveDomain] | None = None,
    engine: str = "auto",
    **filters: Any,
) -> list[Explanation]:
    """Why each distinct SELinux denial in ``inputs`` happened, and its fix.

    Searches as :func:`search` does (AVC and USER_AVC records unless ``types`` is given),
    then explains. ``policy``: True for ``config``'s ``policy_path``, else the installed
    binary policy (from the contexts only when there is none); False for the contexts
    only; or a policy file or :class:`~svirt.policy.PolicyOracle`. ``domains``: the
    running VMs to name; default the live XML of svirt's and libvirt's domains under
    ``config`` (a :class:`~svirt.conf.Config`, a svirt.conf path, or None for the
    default file).
    """
    crit = _merged(where, filters)
    if crit.types is None and "types" not in filters:
        crit = dataclasses.replace(crit, types=frozenset(msg_type_id(t) for t in _DENIALS))
    from svirt.audit.owners import load_live_domains
    from svirt.conf import Config, load_config

    cfg = config if isinstance(config, Config) else load_config(config)
    oracle = _oracle(policy, cfg.policy_path)
    if domains is None:
        domains = load_live_domains(cfg.state_dir, cfg.libvirt_run_dir)
    events = search(inputs, crit, stats, engine=engine)
    return explain_events(events, oracle=oracle, domains=domains)


def can_write_direct(inputs: Sequence[LogInput], fmt: str) -> bool:
    """Can :func:`write_direct` serve these inputs in this format (``"raw"``,
    ``"default"``, ``"interpret"``): plain auditd files and svirt's compiled core (with
    libauparse for ``"interpret"``)."""
    from svirt.audit import native

    return (fmt != "interpret" or native.interprets()) and native.usable(inputs)


def write_direct(
    inputs: Sequence[LogInput], where: SearchCriteria, stats: ReadStats, fmt: str, fd: int
) -> int:
    """Search and write ausearch's output (``fmt`` as in :func:`can_write_direct`)
    straight to the file descriptor ``fd`` from the compiled core; the number of events
    written. Call only when :func:`can_write_direct` says so."""
    from svirt.audit import native

    return native.write_decided(inputs, where, stats, fmt, fd)
