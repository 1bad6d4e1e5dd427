"""svirt.audit: audit logs (raw and ENRICHED), ausearch-compatible search, and denials
explained with sVirt in mind.

- :mod:`~svirt.audit.reader`: streaming records from files, rotated sets, stdin, gzip
- :mod:`~svirt.audit.events`: grouping records into events as ausearch does
- :mod:`~svirt.audit.records`: field parsing and typed AVC/SYSCALL/PATH/PROCTITLE views
- :mod:`~svirt.audit.search`: ausearch's criteria and time words, ``search()``; the exact
  engine
- :mod:`~svirt.audit.matching`: ausearch's per-record extraction rules and the decision
- :mod:`~svirt.audit.fastscan`: the fast engine for type- or serial-anchored searches
- :mod:`~svirt.audit.interpret`: ausearch's output formats (raw, default, ``-i``), JSON
- :mod:`~svirt.audit.owners`: which running VM owns a category set (live domain XML)
- :mod:`~svirt.audit.explain`: why each denial happened, and the fix that keeps isolation

The public surface is ``__all__`` below (``docs/api.md``): :func:`search` and :func:`explain`
take paths and ausearch-like criteria (:mod:`~svirt.audit.facade`); the submodules are not
part of it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from svirt.audit.events import Event, group_records
    from svirt.audit.explain import (
        Cause,
        Denial,
        Explanation,
        FileFacts,
        McsFacts,
        Remembered,
        collect_denials,
    )
    from svirt.audit.facade import (
        LogSource,
        can_write_direct,
        criteria,
        explain,
        explain_events,
        search,
        write_direct,
    )
    from svirt.audit.interpret import event_to_dict, format_event, interpret_record
    from svirt.audit.owners import LiveDomain, load_live_domains, owners_of
    from svirt.audit.reader import (
        LogInput,
        ReadStats,
        Record,
        expand_inputs,
        iter_records,
        msg_type_id,
    )
    from svirt.audit.search import (
        SearchCriteria,
        boot_time,
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
    )

# Imported on first use (PEP 562): a search or a worker process loads only what it uses,
# not the explain machinery (live XML parsing, the policy oracle).
_EXPORTS = {
    "Cause": "svirt.audit.explain",
    "Denial": "svirt.audit.explain",
    "Explanation": "svirt.audit.explain",
    "FileFacts": "svirt.audit.explain",
    "McsFacts": "svirt.audit.explain",
    "Remembered": "svirt.audit.explain",
    "collect_denials": "svirt.audit.explain",
    "explain": "svirt.audit.facade",
    "explain_events": "svirt.audit.facade",
    "search": "svirt.audit.facade",
    "criteria": "svirt.audit.facade",
    "LogSource": "svirt.audit.facade",
    "can_write_direct": "svirt.audit.facade",
    "write_direct": "svirt.audit.facade",
    "Event": "svirt.audit.events",
    "group_records": "svirt.audit.events",
    "event_to_dict": "svirt.audit.interpret",
    "format_event": "svirt.audit.interpret",
    "interpret_record": "svirt.audit.interpret",
    "LiveDomain": "svirt.audit.owners",
    "load_live_domains": "svirt.audit.owners",
    "owners_of": "svirt.audit.owners",
    "LogInput": "svirt.audit.reader",
    "ReadStats": "svirt.audit.reader",
    "Record": "svirt.audit.reader",
    "expand_inputs": "svirt.audit.reader",
    "iter_records": "svirt.audit.reader",
    "msg_type_id": "svirt.audit.reader",
    "SearchCriteria": "svirt.audit.search",
    "boot_time": "svirt.audit.search",
    "parse_event_id": "svirt.audit.search",
    "parse_exit": "svirt.audit.search",
    "parse_gid": "svirt.audit.search",
    "parse_loginuid": "svirt.audit.search",
    "parse_message_types": "svirt.audit.search",
    "parse_pid": "svirt.audit.search",
    "parse_success": "svirt.audit.search",
    "parse_syscall": "svirt.audit.search",
    "parse_time": "svirt.audit.search",
    "parse_uid": "svirt.audit.search",
}

# ``search`` and ``explain`` are both submodules and the public functions above. Importing
# a submodule sets it as an attribute of its package; this keeps the functions instead, so
# ``svirt.audit.search(...)`` works whatever was imported before (``from
# svirt.audit.search import X`` still reaches the module through sys.modules).
_FUNCTIONS = frozenset({"search", "explain"})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'svirt.audit' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Cause",
    "Denial",
    "Event",
    "Explanation",
    "FileFacts",
    "LiveDomain",
    "LogInput",
    "LogSource",
    "McsFacts",
    "ReadStats",
    "Record",
    "Remembered",
    "SearchCriteria",
    "boot_time",
    "can_write_direct",
    "collect_denials",
    "criteria",
    "event_to_dict",
    "expand_inputs",
    "explain",
    "explain_events",
    "format_event",
    "group_records",
    "interpret_record",
    "iter_records",
    "load_live_domains",
    "msg_type_id",
    "owners_of",
    "parse_event_id",
    "parse_exit",
    "parse_gid",
    "parse_loginuid",
    "parse_message_types",
    "parse_pid",
    "parse_success",
    "parse_syscall",
    "parse_time",
    "parse_uid",
    "search",
    "write_direct",
]
