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

from svirt.audit.events import Event, group_records
from svirt.audit.explain import Cause, Denial, Explanation, collect_denials, explain
from svirt.audit.interpret import event_to_dict, format_event, interpret_record
from svirt.audit.owners import LiveDomain, load_live_domains, owners_of
from svirt.audit.reader import LogInput, ReadStats, Record, expand_inputs, iter_records
from svirt.audit.search import SearchCriteria, parse_time

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
