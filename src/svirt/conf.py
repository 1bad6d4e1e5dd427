"""svirt.conf: TOML with qemu.conf's security keys and svirt's own.

qemu.conf's names keep their meanings and defaults (libvirt-security-spec §12), so a
libvirt administrator already knows them. svirt's own keys sit beside them. Unknown keys
and wrong types are errors naming the key and the file.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from svirt.context import SecurityContext
from svirt.errors import PREFIX_CONF_SYNTAX, ConfigError, ContextError

__all__ = [
    "DEFAULT_CGROUP_DEVICE_ACL",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DAEMON_CONTEXT",
    "DEFAULT_PROTECTED_PATHS",
    "Config",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/svirt/svirt.conf")
DEFAULT_CGROUP_DEVICE_ACL = (
    "/dev/null",
    "/dev/full",
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
    "/dev/ptmx",
    "/dev/kvm",
)
# What libvirt's daemon runs as on an SELinux host; used where getcon fails.
DEFAULT_DAEMON_CONTEXT = "system_u:system_r:virtd_t:s0-s0:c0.c1023"
DEFAULT_PROTECTED_PATHS = (
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/proc",
    "/sys",
)
_KNOWN_DRIVERS = ("selinux", "apparmor", "none")
_DAC_MODES = ("chown", "acl")
_NAMESPACES = ("mount",)
_VM_IDENTITY = ("auto", "on", "off")
_MAX_CONFIG = 1 << 20  # a configuration is small: anything bigger is not one


@dataclass(frozen=True, slots=True)
class Config:
    """Effective configuration. Field names are the TOML keys."""

    # qemu.conf keys (libvirt-security-spec §12)
    security_driver: tuple[str, ...] | None = None  # None: probe (selinux if enabled, else none)
    security_default_confined: bool = True
    security_require_confined: bool = False
    user: str = "svirt-qemu"
    group: str = "svirt-qemu"
    dynamic_ownership: bool = True
    remember_owner: bool = True
    namespaces: tuple[str, ...] = ("mount",)
    cgroup_device_acl: tuple[str, ...] = DEFAULT_CGROUP_DEVICE_ACL
    # svirt's own keys
    state_dir: Path = Path("/run/svirt")
    qemu_binary: str = "qemu-system-x86_64"
    daemon_context: str = DEFAULT_DAEMON_CONTEXT
    policy_path: Path | None = None  # None: the installed policy
    selinux_root: Path | None = None  # None: libselinux's selinux_path()
    protected_paths: tuple[str, ...] = DEFAULT_PROTECTED_PATHS
    images_dirs: tuple[str, ...] = ("/var/lib/libvirt/images", "/var/lib/svirt/images")
    dac_mode: str = "chown"
    libvirt_run_dir: Path = Path("/run/libvirt/qemu")
    # --- fleet ledger (issue 15): the MCS ledger on an etcd cluster -------------------
    ledger: str = "sqlite"  # "sqlite" (this host only) or "etcd" (hosts sharing storage)
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    etcd_prefix: str = "/svirt/"
    etcd_lease_ttl: int = 30  # seconds a dead host's pairs stay reserved
    etcd_timeout: float = 2.0  # seconds per request before an endpoint counts as down
    host_id: str | None = None  # None: /etc/machine-id
    keep_labels: tuple[str, ...] = ()  # domains whose pair follows them ("*": every one)
    # --- issue 11 (hardening): hard links, per-VM QEMU identity ---------------------------
    allow_hard_links: bool = False  # accept an image with more than one hard link
    vm_identity: str = "auto"  # "auto" (on where SELinux does not enforce), "on", "off"
    vm_id_range: tuple[int, int] = (2_000_000_000, 2_000_065_535)  # uid = gid, inclusive
    source: str = field(default="<defaults>", compare=False)


_TYPES: dict[str, tuple[type, ...]] = {
    "security_driver": (str, list),
    "security_default_confined": (bool, int),
    "security_require_confined": (bool, int),
    "user": (str,),
    "group": (str,),
    "dynamic_ownership": (bool, int),
    "remember_owner": (bool, int),
    "namespaces": (list,),
    "cgroup_device_acl": (list,),
    "state_dir": (str,),
    "qemu_binary": (str,),
    "daemon_context": (str,),
    "policy_path": (str,),
    "selinux_root": (str,),
    "protected_paths": (list,),
    "images_dirs": (list,),
    "dac_mode": (str,),
    "libvirt_run_dir": (str,),
    # fleet ledger (issue 15)
    "ledger": (str,),
    "etcd_endpoints": (list,),
    "etcd_ca": (str,),
    "etcd_cert": (str,),
    "etcd_key": (str,),
    "etcd_prefix": (str,),
    "etcd_lease_ttl": (int,),
    "etcd_timeout": (int, float),
    "host_id": (str,),
    "keep_labels": (list,),
    # issue 11 (hardening)
    "allow_hard_links": (bool, int),
    "vm_identity": (str,),
    "vm_id_range": (list,),
}
_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
}


def _str_list(key: str, value: list[Any], source: str) -> tuple[str, ...]:
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"key '{key}' must be a list of strings", source=source)
    return tuple(value)


def _bool(key: str, value: Any, source: str) -> bool:
    # qemu.conf writes booleans as 0/1; TOML has true/false. Accept both, nothing else.
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ConfigError(f"key '{key}' must be a boolean (true/false or 0/1)", source=source)


def _convert(key: str, value: Any, source: str) -> Any:
    allowed = _TYPES[key]
    # bool is a subclass of int; only keys that take booleans list int (for qemu.conf's 0/1).
    wrong_bool = isinstance(value, bool) and bool not in allowed
    right_type = isinstance(value, allowed)  # a plain bool: keeps `value` typed Any
    if wrong_bool or not right_type:
        names = " or ".join(_TYPE_NAMES[t] for t in allowed if t is not int or allowed == (int,))
        raise ConfigError(f"key '{key}' must be {names}, not {type(value).__name__}", source=source)
    if key in (
        "security_default_confined",
        "security_require_confined",
        "dynamic_ownership",
        "remember_owner",
        "allow_hard_links",
    ):
        return _bool(key, value, source)
    if key == "vm_id_range":
        if (
            len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 1 <= value[0] <= value[1] <= 2**32 - 2
        ):
            raise ConfigError(
                "key 'vm_id_range' must be [first, last], two ids with 0 < first <= last",
                source=source,
            )
        return (int(value[0]), int(value[1]))
    if key == "security_driver":
        drivers = (value,) if isinstance(value, str) else _str_list(key, value, source)
        seen: set[str] = set()
        for d in drivers:
            if d in seen:
                raise ConfigError(
                    f"{PREFIX_CONF_SYNTAX}Duplicate security driver {d}", source=source
                )
            seen.add(d)
        return drivers
    if key == "etcd_timeout":
        return float(value)
    if key in (
        "namespaces",
        "cgroup_device_acl",
        "protected_paths",
        "images_dirs",
        "etcd_endpoints",
        "keep_labels",
    ):
        return _str_list(key, value, source)
    if key in (
        "state_dir",
        "policy_path",
        "selinux_root",
        "libvirt_run_dir",
        "etcd_ca",
        "etcd_cert",
        "etcd_key",
    ):
        if not value:
            raise ConfigError(f"key '{key}' must not be empty", source=source)
        if "\0" in value:
            raise ConfigError(f"key '{key}' must not contain a NUL character", source=source)
        if key == "state_dir" and not value.startswith("/"):
            raise ConfigError(
                f"key 'state_dir' must be an absolute path, not '{value}'", source=source
            )
        return Path(value)
    return value


def _validate(cfg: Config) -> None:
    src = cfg.source
    if cfg.security_driver is not None:
        for d in cfg.security_driver:
            if d == "dac":
                # dac is always stacked last; naming it is libvirt's "not found".
                raise ConfigError("internal error: Security driver dac not found", source=src)
            if d not in _KNOWN_DRIVERS:
                raise ConfigError(f"internal error: Security driver {d} not found", source=src)
        if "none" in cfg.security_driver and len(cfg.security_driver) > 1:
            raise ConfigError("security_driver 'none' must be used alone", source=src)
    for ns in cfg.namespaces:
        if ns not in _NAMESPACES:
            raise ConfigError(f"unsupported configuration: Unknown namespace: {ns}", source=src)
    if cfg.dac_mode not in _DAC_MODES:
        raise ConfigError(
            f"key 'dac_mode' must be one of {', '.join(_DAC_MODES)}, not '{cfg.dac_mode}'",
            source=src,
        )
    try:
        SecurityContext.parse(cfg.daemon_context)
    except ContextError as exc:
        raise ConfigError(f"key 'daemon_context': {exc.message}", source=src) from None
    for p in cfg.cgroup_device_acl:
        if not p.startswith("/dev/"):
            raise ConfigError(f"key 'cgroup_device_acl': '{p}' is not under /dev", source=src)
    for p in (*cfg.protected_paths, *cfg.images_dirs):
        if not p.startswith("/"):
            raise ConfigError(f"path '{p}' in svirt.conf must be absolute", source=src)
    if cfg.vm_identity not in _VM_IDENTITY:
        raise ConfigError(
            f"key 'vm_identity' must be one of {', '.join(_VM_IDENTITY)}, not '{cfg.vm_identity}'",
            source=src,
        )
    for p in (*cfg.protected_paths, *cfg.images_dirs, *cfg.cgroup_device_acl):
        if "\0" in p:
            raise ConfigError("a path in svirt.conf must not contain a NUL character", source=src)
    if cfg.user == "" or cfg.group == "":
        raise ConfigError("keys 'user' and 'group' must not be empty", source=src)
    _validate_fleet(cfg)


def _validate_fleet(cfg: Config) -> None:
    """The fleet ledger's keys (issue 15)."""
    src = cfg.source
    if cfg.ledger not in ("sqlite", "etcd"):
        raise ConfigError(
            f"key 'ledger' must be one of sqlite, etcd, not '{cfg.ledger}'", source=src
        )
    if not cfg.etcd_endpoints:
        raise ConfigError("key 'etcd_endpoints' must not be empty", source=src)
    for ep in cfg.etcd_endpoints:
        scheme, sep, rest = ep.partition("://")
        host, colon, port = rest.rstrip("/").rpartition(":")
        if not sep or scheme not in ("http", "https") or not colon or not host:
            raise ConfigError(
                f"key 'etcd_endpoints': '{ep}' is not http(s)://HOST:PORT", source=src
            )
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"key 'etcd_endpoints': bad port in '{ep}'", source=src)
    if (cfg.etcd_cert is None) != (cfg.etcd_key is None):
        raise ConfigError("keys 'etcd_cert' and 'etcd_key' must be given together", source=src)
    if not cfg.etcd_prefix.startswith("/") or not cfg.etcd_prefix.endswith("/"):
        raise ConfigError("key 'etcd_prefix' must start and end with '/'", source=src)
    if cfg.etcd_lease_ttl < 2:
        raise ConfigError("key 'etcd_lease_ttl' must be at least 2 seconds", source=src)
    if cfg.etcd_timeout <= 0:
        raise ConfigError("key 'etcd_timeout' must be positive", source=src)
    if cfg.host_id is not None and (not cfg.host_id or "/" in cfg.host_id):
        raise ConfigError("key 'host_id' must be a non-empty name without '/'", source=src)


def config_from_mapping(data: dict[str, Any], source: str = "<mapping>") -> Config:
    """Build a Config from parsed TOML, checking every key and type."""
    known = {f.name for f in fields(Config)} - {"source"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown key '{key}'", source=source)
        values[key] = _convert(key, value, source)
    if "protected_paths" in values:
        # svirt.conf adds to the built-in protected paths; it cannot unprotect /etc.
        values["protected_paths"] = tuple(
            dict.fromkeys((*DEFAULT_PROTECTED_PATHS, *values["protected_paths"]))
        )
    cfg = Config(**values, source=source)
    _validate(cfg)
    return cfg


def _read_config(p: Path) -> bytes:
    """The file's bytes; a FIFO, a device or anything but a small regular file is
    refused without reading (``/dev/zero`` or a FIFO would never end)."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("cannot read configuration: not a regular file", source=str(p))
        if st.st_size > _MAX_CONFIG:
            raise ConfigError(
                f"cannot read configuration: larger than {_MAX_CONFIG} bytes", source=str(p)
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(_MAX_CONFIG + 1)
    finally:
        os.close(fd)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load svirt.conf. With no path, the default file is read if it exists, otherwise
    the defaults apply. A path given explicitly must exist."""
    explicit = path is not None
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if "\0" in str(p):
        raise ConfigError("cannot read configuration: NUL in the file name", source=repr(str(p)))
    try:
        raw = _read_config(p)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                "cannot read configuration: No such file or directory", source=str(p)
            ) from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", source=str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{PREFIX_CONF_SYNTAX}{exc}", source=str(p)) from None
    return config_from_mapping(data, source=str(p))
