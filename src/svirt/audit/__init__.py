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
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): a search or a worker process loads only what it uses,
# not the explain machinery (live XML parsing, the policy oracle).
_EXPORTS = {
    "Cause": "svirt.audit.explain",
    "Denial": "svirt.audit.explain",
    "Explanation": "svirt.audit.explain",
    "collect_denials": "svirt.audit.explain",
    "explain": "svirt.audit.explain",
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
    "SearchCriteria": "svirt.audit.search",
    "parse_time": "svirt.audit.search",
}


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
    "LiveDomain",
    "LogInput",
    "ReadStats",
    "Record",
    "SearchCriteria",
    "collect_denials",
    "event_to_dict",
    "expand_inputs",
    "explain",
    "format_event",
    "group_records",
    "interpret_record",
    "iter_records",
    "load_live_domains",
    "owners_of",
    "parse_time",
]
