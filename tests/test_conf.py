"""svirt.conf: keys, types, defaults, libvirt's config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from svirt.conf import DEFAULT_PROTECTED_PATHS, Config, load_config
from svirt.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "svirt.conf"
    p.write_text(text)
    return p


def test_defaults_match_qemu_conf() -> None:
    cfg = Config()
    assert cfg.security_driver is None
    assert cfg.security_default_confined is True
    assert cfg.security_require_confined is False
    assert cfg.dynamic_ownership is True
    assert cfg.remember_owner is True
    assert cfg.namespaces == ("mount",)
    assert cfg.cgroup_device_acl[0] == "/dev/null" and "/dev/kvm" in cfg.cgroup_device_acl


def test_example_config_loads(data_dir: Path) -> None:
    example = Path(__file__).parent.parent / "etc" / "svirt.conf.example"
    cfg = load_config(example)
    assert cfg.security_driver == ("selinux",)
    assert cfg.protected_paths == DEFAULT_PROTECTED_PATHS


def test_values(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            'security_driver = "selinux"\nremember_owner = 0\n'
            'user = "+107"\nprotected_paths = ["/srv/keep"]\n'
            'state_dir = "/tmp/x"\nnamespaces = []\n',
        )
    )
    assert cfg.security_driver == ("selinux",)
    assert cfg.remember_owner is False
    assert cfg.user == "+107"
    assert cfg.protected_paths[-1] == "/srv/keep" and "/etc" in cfg.protected_paths
    assert cfg.state_dir == Path("/tmp/x")
    assert cfg.namespaces == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ('remember_owner = "yes"\n', "key 'remember_owner' must be a boolean"),
        ("remember_owner = 2\n", "key 'remember_owner' must be a boolean"),
        ("user = 5\n", "key 'user' must be a string, not int"),
        ("user = true\n", "key 'user' must be a string, not bool"),
        ("namespaces = [1]\n", "key 'namespaces' must be a list of strings"),
        ('namespaces = ["net"]\n', "Unknown namespace: net"),
        ('security_driver = ["selinux", "selinux"]\n', "Duplicate security driver selinux"),
        ('security_driver = "dac"\n', "internal error: Security driver dac not found"),
        ('security_driver = "smack"\n', "Security driver smack not found"),
        ('security_driver = ["selinux", "none"]\n', "'none' must be used alone"),
        ('dac_mode = "setuid"\n', "key 'dac_mode' must be one of chown, acl"),
        ('daemon_context = "bad"\n', "key 'daemon_context': invalid security context"),
        ('cgroup_device_acl = ["/tmp/x"]\n', "is not under /dev"),
        ('protected_paths = ["relative"]\n', "must be absolute"),
        ("this is not toml\n", "configuration file syntax error"),
    ],
)
def test_errors_name_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert message in str(info.value)
    assert str(info.value).startswith(str(p) + ": ")
    assert "\n" not in str(info.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.conf")
