"""One svirt process of a simulated fleet host (run by test_fleet.py and the bench):
allocates N levels through the etcd ledger and prints one per line."""

from __future__ import annotations

import sys
from pathlib import Path

from svirt.security.fleet import EtcdLedger, FleetSettings
from svirt.state.db import connect


def main() -> int:
    settings = FleetSettings.from_json(sys.argv[1])
    cat_max, n, prefix = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    conn = connect(Path(settings.state_dir))
    ledger = EtcdLedger(conn, 0, 0, cat_max, settings)
    for i in range(n):
        print(ledger.allocate(f"{prefix}{i}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
