"""svirt.conf's fleet ledger keys (issue 15): defaults, types and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from svirt.conf import config_from_mapping, load_config
from svirt.errors import ConfigError
from svirt.security.fleet import FleetSettings


def test_defaults_keep_the_sqlite_ledger() -> None:
    cfg = config_from_mapping({})
    assert cfg.ledger == "sqlite"
    assert cfg.etcd_endpoints == ("http://127.0.0.1:2379",)
    assert cfg.host_id is None and cfg.etcd_prefix == "/svirt/"


def test_host_id_defaults_to_the_machine_id() -> None:
    mid = Path("/etc/machine-id").read_text().strip()
    assert FleetSettings.from_config(config_from_mapping({"ledger": "etcd"})).host_id == mid
    cfg = config_from_mapping({"ledger": "etcd", "host_id": "hv01", "etcd_timeout": 1})
    st = FleetSettings.from_config(cfg)
    assert st.host_id == "hv01" and st.timeout == 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ledger": "zookeeper"}, "key 'ledger' must be one of sqlite, etcd, not 'zookeeper'"),
        ({"etcd_endpoints": []}, "key 'etcd_endpoints' must not be empty"),
        ({"etcd_endpoints": ["etcd1:2379"]}, "'etcd1:2379' is not http(s)://HOST:PORT"),
        ({"etcd_endpoints": ["http://e:99999"]}, "bad port in 'http://e:99999'"),
        ({"etcd_endpoints": "http://e:2379"}, "key 'etcd_endpoints' must be a list"),
        ({"etcd_cert": "/c.pem"}, "keys 'etcd_cert' and 'etcd_key' must be given together"),
        ({"etcd_prefix": "svirt"}, "key 'etcd_prefix' must start and end with '/'"),
        ({"etcd_lease_ttl": 1}, "key 'etcd_lease_ttl' must be at least 2 seconds"),
        ({"etcd_lease_ttl": "30"}, "key 'etcd_lease_ttl' must be an integer"),
        ({"host_id": "a/b"}, "key 'host_id' must be a non-empty name without '/'"),
        ({"keep_labels": [1]}, "key 'keep_labels' must be a list of strings"),
    ],
)
def test_bad_fleet_keys_are_one_line_errors(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    conf = tmp_path / "svirt.conf"
    lines = []
    for k, v in data.items():
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, list):
            items = ", ".join(f'"{i}"' if isinstance(i, str) else str(i) for i in v)
            lines.append(f"{k} = [{items}]")
        else:
            lines.append(f"{k} = {v}")
    conf.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    text = str(exc.value)
    assert message in text and str(conf) in text and "\n" not in text
