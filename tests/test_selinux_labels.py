"""SELinux label generation (libvirt-security-spec §3, §4, §13.2).

The policy's real ``virtual_domain_context``/``virtual_image_context`` (Debian's reference
policy: svirt_t, svirt_image_t, virt_content_t) unless a test writes its own SELinux root.
``getcon`` fails on this kernel, so the daemon's context comes from ``daemon_context`` in
the configuration, which plays the part of libvirt's mocked ``getcon``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from svirt.conf import Config, config_from_mapping
from svirt.context import SecurityContext
from svirt.domain import Domain, Seclabel, SeclabelType, parse_domain
from svirt.errors import LabelSystemError, SecurityError
from svirt.security import selinux as selinux_mod
from svirt.security.manager import SecurityManager
from svirt.security.selinux import SELinuxDriver, load_virt_contexts, mcs_range

FILE_CONTEXT = "system_u:object_r:svirt_image_t:s0"
CONTENT_CONTEXT = "system_u:object_r:virt_content_t:s0"


def config(tmp_path: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "security_driver": ["selinux"],
        "state_dir": str(tmp_path / "state"),
        "libvirt_run_dir": str(tmp_path / "libvirt-run"),
    }
    data.update(extra)
    return config_from_mapping(data, source="<test>")


def domain(
    name: str,
    seclabel: str = "<seclabel type='dynamic' model='selinux'/>",
    *,
    virt_type: str = "kvm",
    live: bool = False,
) -> Domain:
    id_attr = " id='1'" if live else ""
    return parse_domain(
        f"<domain type='{virt_type}'{id_attr}><name>{name}</name>{seclabel}</domain>"
    )


def selinux_label(d: Domain) -> Seclabel:
    sl = d.seclabel("selinux")
    assert sl is not None
    return sl


# --- §13.2: securityselinuxtest.c's table -----------------------------------------------

RANGE = re.compile(r"^s(\d+):c(\d+)(?:,c(\d+))?$")

# (pidcon, user, role, sensMin, catMin, catMax), rows 1–7 of the table.
TABLE = [
    ("unconfined_u:unconfined_r:unconfined_t:s0", "unconfined_u", "unconfined_r", 0, 0, 1023),
    ("unconfined_u:unconfined_r:unconfined_t:s0-s0", "unconfined_u", "unconfined_r", 0, 0, 1023),
    (
        "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023",
        "unconfined_u",
        "unconfined_r",
        0,
        0,
        1023,
    ),
    ("system_u:system_r:virtd_t:s0-s0:c0.c1023", "system_u", "system_r", 0, 0, 1023),
    ("system_u:system_r:virtd_t:s0-s0:c0.c10", "system_u", "system_r", 0, 0, 10),
    ("system_u:system_r:virtd_t:s2-s3:c0.c1023", "system_u", "system_r", 2, 0, 1023),
    ("system_u:system_r:virtd_t", "system_u", "system_r", 0, 0, 1023),
]


def check_range(rng: str, sens: int, cat_min: int, cat_max: int) -> tuple[int, int]:
    m = RANGE.match(rng)
    assert m, f"range {rng!r} is not sN:cA,cB"
    assert int(m.group(1)) == sens
    assert m.group(3) is not None, "modern libvirt never generates a single category"
    a, b = int(m.group(2)), int(m.group(3))
    assert a != b, f"Saw category pair {a},{b} where cats were equal"
    assert a < b
    assert cat_min <= a and b <= cat_max
    return a, b


@pytest.mark.parametrize(
    ("pidcon", "user", "role", "sens", "cat_min", "cat_max"),
    TABLE,
    ids=[f"row{i}" for i in range(1, 8)],
)
def test_label_generation_table(
    tmp_path: Path, pidcon: str, user: str, role: str, sens: int, cat_min: int, cat_max: int
) -> None:
    mgr = SecurityManager(config(tmp_path, daemon_context=pidcon))
    pairs = set()
    for i in range(40):
        sl = selinux_label(mgr.gen_labels(domain(f"vm{i}")))
        assert sl.label is not None and sl.imagelabel is not None
        label = SecurityContext.parse(sl.label)
        image = SecurityContext.parse(sl.imagelabel)
        assert (label.user, label.role, label.type) == (user, role, "svirt_t")
        assert (image.user, image.role, image.type) == (user, "object_r", "svirt_image_t")
        rng = sl.label.split(":", 3)[3]
        assert sl.imagelabel.split(":", 3)[3] == rng  # the same pair on both
        pairs.add(check_range(rng, sens, cat_min, cat_max))
    assert len(pairs) == 40  # unique while the ledger holds them


def test_example_labels_of_spec_3_4(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))  # default daemon context: virtd_t c0.c1023
    sl = selinux_label(mgr.gen_labels(domain("vm")))
    assert sl.label is not None and sl.imagelabel is not None
    rng = sl.label.removeprefix("system_u:system_r:svirt_t:")
    check_range(rng, 0, 0, 1023)
    assert sl.imagelabel == f"system_u:object_r:svirt_image_t:{rng}"
    assert sl.model == "selinux" and sl.type is SeclabelType.DYNAMIC


def test_eleven_categories_are_enough_and_drawn_from_them(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, daemon_context="system_u:system_r:virtd_t:s0-s0:c0.c10"))
    for i in range(55):  # every pair of c0..c10
        sl = selinux_label(mgr.gen_labels(domain(f"vm{i}")))
        assert sl.label is not None
        check_range(sl.label.split(":", 3)[3], 0, 0, 10)
    with pytest.raises(SecurityError, match="no free MCS category pair"):
        mgr.gen_labels(domain("vm55"))


def test_category_range_too_small(tmp_path: Path) -> None:
    with pytest.raises(SecurityError) as info:
        SecurityManager(config(tmp_path, daemon_context="system_u:system_r:virtd_t:s0-s0:c3.c9"))
    assert str(info.value) == "internal error: Category range c3-c9 too small"


# --- §3.2: the MCS range of the daemon ---------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        ("system_u:system_r:virtd_t", (0, 0, 1023)),
        ("system_u:system_r:virtd_t:s0", (0, 0, 1023)),
        ("system_u:system_r:virtd_t:s0-s0", (0, 0, 1023)),
        ("system_u:system_r:virtd_t:s0-s0:c0.c1023", (0, 0, 1023)),
        ("system_u:system_r:virtd_t:s0-s0:c0.c10", (0, 0, 10)),
        ("system_u:system_r:virtd_t:s2-s3:c0.c1023", (2, 0, 1023)),
        ("system_u:system_r:virtd_t:s0:c5.c200", (0, 5, 200)),
    ],
)
def test_mcs_range_table(ctx: str, expected: tuple[int, int, int]) -> None:
    assert mcs_range(ctx) == expected


@pytest.mark.parametrize(
    ("ctx", "message"),
    [
        ("system_u:system_r:virtd_t:s0-s0:c0,c5", "Cannot parse category in c0,c5"),
        ("system_u:system_r:virtd_t:s0-s0:x0.c5", "Cannot parse category in x0.c5"),
        ("system_u:system_r:virtd_t:s0-s0:c0.x5", "Cannot parse category in c0.x5"),
        ("system_u:system_r:virtd_t:s0-s0:c.c5", "Cannot parse category in c.c5"),
        ("system_u:system_r:virtd_t:s0-s0:c0", "No category range available"),
        ("virtd_t", "Unable to parse current SELinux context 'virtd_t'"),
    ],
)
def test_mcs_range_errors(ctx: str, message: str) -> None:
    with pytest.raises(SecurityError) as info:
        mcs_range(ctx)
    assert str(info.value) == f"internal error: {message}"


def test_daemon_context_error_surfaces_at_startup(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="internal error: Cannot parse category in c0,c5"):
        SecurityManager(config(tmp_path, daemon_context="system_u:system_r:virtd_t:s0:c0,c5"))


# --- §3.1: the policy's context files -----------------------------------------------------


def test_installed_policy_contexts() -> None:
    ctx = load_virt_contexts()
    assert ctx.domain_context == "system_u:system_r:svirt_t:s0"
    assert ctx.alt_domain_context is None  # no svirt_tcg_t in Debian's policy
    assert ctx.file_context == FILE_CONTEXT
    assert ctx.content_context == CONTENT_CONTEXT


def write_root(root: Path, domain_text: str | None, image_text: str | None) -> Path:
    (root / "contexts").mkdir(parents=True)
    if domain_text is not None:
        (root / "contexts" / "virtual_domain_context").write_text(domain_text)
    if image_text is not None:
        (root / "contexts" / "virtual_image_context").write_text(image_text)
    return root


def test_custom_root_with_tcg_line_and_no_content_line(tmp_path: Path) -> None:
    root = write_root(
        tmp_path / "sel",
        "system_u:system_r:svirt_t:s0\nsystem_u:system_r:svirt_tcg_t:s0\n",
        "system_u:object_r:svirt_image_t:s0",  # no newline: no content context
    )
    ctx = load_virt_contexts(root)
    assert ctx.alt_domain_context == "system_u:system_r:svirt_tcg_t:s0"
    assert ctx.content_context is None


def test_missing_domain_context_file_is_libvirts_error(tmp_path: Path) -> None:
    root = write_root(tmp_path / "sel", None, "system_u:object_r:svirt_image_t:s0\n")
    with pytest.raises(LabelSystemError) as info:
        load_virt_contexts(root)
    path = root / "contexts" / "virtual_domain_context"
    assert str(info.value) == (
        f"cannot read SELinux virtual domain context file '{path}': No such file or directory"
    )


def test_missing_image_context_file_has_no_quotes(tmp_path: Path) -> None:
    root = write_root(tmp_path / "sel", "system_u:system_r:svirt_t:s0\n", None)
    with pytest.raises(LabelSystemError) as info:
        load_virt_contexts(root)
    path = root / "contexts" / "virtual_image_context"
    assert str(info.value) == (
        f"cannot read SELinux virtual image context file {path}: No such file or directory"
    )


def test_garbage_base_context(tmp_path: Path) -> None:
    root = write_root(tmp_path / "sel", "not a context\n", FILE_CONTEXT + "\n")
    with pytest.raises(SecurityError) as info:
        load_virt_contexts(root)
    assert str(info.value) == "internal error: Unable to parse base SELinux context 'not a context'"


# --- TCG, baselabel ---------------------------------------------------------------------


def test_tcg_without_alt_context_uses_svirt_t_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selinux_mod, "_warned_tcg", False)
    mgr = SecurityManager(config(tmp_path))
    with caplog.at_level(logging.WARNING, logger="svirt.security.selinux"):
        a = selinux_label(mgr.gen_labels(domain("tcg1", virt_type="qemu")))
        b = selinux_label(mgr.gen_labels(domain("tcg2", virt_type="qemu")))
    assert a.label is not None and a.label.startswith("system_u:system_r:svirt_t:s0:c")
    assert b.label is not None and b.label.startswith("system_u:system_r:svirt_t:s0:c")
    warnings = [r.getMessage() for r in caplog.records if r.name == "svirt.security.selinux"]
    assert warnings == [
        "SELinux policy does not define a domain type for QEMU TCG. Guest startup may be "
        "denied due to missing 'execmem' privilege unless the 'virt_use_execmem' policy "
        "boolean is enabled"
    ]


def test_tcg_uses_the_alt_context_when_the_policy_has_one(tmp_path: Path) -> None:
    root = write_root(
        tmp_path / "sel",
        "system_u:system_r:svirt_t:s0\nsystem_u:system_r:svirt_tcg_t:s0\n",
        f"{FILE_CONTEXT}\n{CONTENT_CONTEXT}\n",
    )
    mgr = SecurityManager(config(tmp_path, selinux_root=str(root)))
    tcg = selinux_label(mgr.gen_labels(domain("tcg", virt_type="qemu")))
    kvm = selinux_label(mgr.gen_labels(domain("kvm")))
    assert tcg.label is not None and ":svirt_tcg_t:s0:c" in tcg.label
    assert kvm.label is not None and ":svirt_t:s0:c" in kvm.label
    assert tcg.imagelabel is not None and ":svirt_image_t:" in tcg.imagelabel


def test_baselabel_keeps_only_its_type(tmp_path: Path) -> None:
    mgr = SecurityManager(
        config(tmp_path, daemon_context="unconfined_u:unconfined_r:unconfined_t:s0")
    )
    d = domain(
        "custom",
        "<seclabel type='dynamic' model='selinux'>"
        "<baselabel>system_u:system_r:svirt_custom_t:s0</baselabel></seclabel>",
        virt_type="qemu",  # baselabel beats the TCG choice too
    )
    sl = selinux_label(mgr.gen_labels(d))
    assert sl.label is not None and sl.imagelabel is not None
    ctx = SecurityContext.parse(sl.label)
    assert (ctx.user, ctx.role, ctx.type) == ("unconfined_u", "unconfined_r", "svirt_custom_t")
    check_range(str(ctx.range), 0, 0, 1023)
    assert sl.imagelabel == f"unconfined_u:object_r:svirt_image_t:{ctx.range}"
    assert sl.baselabel == "system_u:system_r:svirt_custom_t:s0"


def test_unparsable_baselabel_releases_the_pair(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    mgr = SecurityManager(cfg)
    drv = mgr.selinux
    assert drv is not None
    d = domain("bad")
    with pytest.raises(SecurityError) as info:
        drv.gen_label(d, Seclabel(SeclabelType.DYNAMIC, "selinux", True, baselabel="garbage"))
    assert str(info.value) == "internal error: Unable to parse base SELinux context 'garbage'"
    assert list(drv.ledger.reservations()) == []


# --- static and none (§4) ---------------------------------------------------------------

STATIC = "system_u:system_r:svirt_t:s0:c392,c662"


def test_static_label_is_kept_and_its_imagelabel_derived(tmp_path: Path) -> None:
    mgr = SecurityManager(
        config(tmp_path, daemon_context="unconfined_u:unconfined_r:unconfined_t:s0")
    )
    d = domain("st", f"<seclabel type='static' model='selinux'><label>{STATIC}</label></seclabel>")
    sl = selinux_label(mgr.gen_labels(d))
    assert sl.label == STATIC
    # file_context's role and type, the daemon's user (not the static label's), full range
    assert sl.imagelabel == "unconfined_u:object_r:svirt_image_t:s0:c392,c662"
    assert sl.relabel is False  # the default for static
    assert [op for op in mgr.set_ops(replace(d, seclabels=(sl,))) if op.driver == "selinux"] == []


def test_static_label_with_a_full_range(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    label = "system_u:system_r:svirt_t:s0:c0.c1023"
    d = domain("st", f"<seclabel type='static' model='selinux'><label>{label}</label></seclabel>")
    sl = selinux_label(mgr.gen_labels(d))
    assert sl.imagelabel == "system_u:object_r:svirt_image_t:s0:c0.c1023"


def test_static_label_is_recorded_and_never_handed_out(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, daemon_context="system_u:system_r:virtd_t:s0-s0:c0.c7"))
    label = "system_u:system_r:svirt_t:s0:c3,c5"
    mgr.gen_labels(
        domain("st", f"<seclabel type='static' model='selinux'><label>{label}</label></seclabel>")
    )
    drv = mgr.selinux
    assert drv is not None
    assert drv.ledger.owner("s0:c3,c5") == "st"
    dynamic = {selinux_label(mgr.gen_labels(domain(f"d{i}"))).label for i in range(27)}
    assert not any(x is not None and x.endswith(":s0:c3,c5") for x in dynamic)


def test_second_static_with_the_same_level_shares_it(tmp_path: Path) -> None:
    """Issue 14: libvirt lets several domains set one static label (seed 001); the
    second used to be refused ("MCS level ... already reserved")."""
    mgr = SecurityManager(config(tmp_path))
    xml = f"<seclabel type='static' model='selinux'><label>{STATIC}</label></seclabel>"
    one = selinux_label(mgr.gen_labels(domain("one", xml)))
    two = selinux_label(mgr.gen_labels(domain("two", xml)))
    assert one.label == two.label == STATIC and one.imagelabel == two.imagelabel
    drv = mgr.selinux
    assert drv is not None
    assert drv.ledger.levels_of("one") == drv.ledger.levels_of("two") == ["s0:c392,c662"]


def test_static_with_relabel_yes_labels_with_the_derived_imagelabel(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    img = tmp_path / "a.img"
    img.write_bytes(b"")
    d = parse_domain(
        "<domain type='kvm'><name>st</name>"
        f"<seclabel type='static' model='selinux' relabel='yes'><label>{STATIC}</label>"
        "</seclabel><devices><disk type='file'>"
        f"<source file='{img}'/><target dev='vda'/></disk></devices></domain>"
    )
    live = mgr.gen_labels(d)
    ops = [op for op in mgr.set_ops(live) if op.driver == "selinux"]
    assert [(op.path, op.value, op.remember) for op in ops] == [
        (str(img), "system_u:object_r:svirt_image_t:s0:c392,c662", True)
    ]


def test_static_label_without_a_range(tmp_path: Path) -> None:
    drv = SELinuxDriver(config(tmp_path))
    with pytest.raises(SecurityError) as info:
        drv.gen_label(
            domain("st"),
            Seclabel(SeclabelType.STATIC, "selinux", False, label="system_u:system_r:svirt_t"),
        )
    assert str(info.value) == "internal error: unable to get selinux context range"


def test_static_label_that_does_not_parse(tmp_path: Path) -> None:
    drv = SELinuxDriver(config(tmp_path))
    with pytest.raises(SecurityError) as info:
        drv.gen_label(domain("st"), Seclabel(SeclabelType.STATIC, "selinux", False, label="junk"))
    assert str(info.value) == "internal error: unable to allocate socket security context 'junk'"


def test_none_gets_an_imagelabel_at_the_low_sensitivity_and_no_label(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, daemon_context="system_u:system_r:virtd_t:s2-s3"))
    sl = selinux_label(mgr.gen_labels(domain("n", "<seclabel type='none' model='selinux'/>")))
    assert sl.label is None
    assert sl.imagelabel == "system_u:object_r:svirt_image_t:s2"
    drv = mgr.selinux
    assert drv is not None
    assert list(drv.ledger.reservations()) == []


def test_unconfined_guests_refused_when_confinement_is_required(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, security_require_confined=True))
    with pytest.raises(SecurityError) as info:
        mgr.gen_labels(domain("n", "<seclabel type='none' model='selinux'/>"))
    assert str(info.value) == (
        "unsupported configuration: Unconfined guests are not allowed on this host"
    )


# --- implicit labels, preconditions, adoption, release ------------------------------------


def test_no_seclabel_gets_an_implicit_dynamic_one(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    d = parse_domain("<domain type='kvm'><name>bare</name></domain>")
    sl = selinux_label(mgr.gen_labels(d))
    assert sl.implicit and sl.type is SeclabelType.DYNAMIC and sl.relabel
    assert sl.label is not None and sl.label.startswith("system_u:system_r:svirt_t:s0:c")
    released = mgr.release_labels(
        mgr.gen_labels(parse_domain("<domain type='kvm'><name>bare2</name></domain>"))
    )
    assert released.seclabels == ()  # the implicit label goes away again


def test_no_seclabel_and_not_default_confined_means_no_label(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, security_default_confined=False))
    d = parse_domain("<domain type='kvm'><name>bare</name></domain>")
    assert mgr.gen_labels(d).seclabels == ()
    drv = mgr.selinux
    assert drv is not None
    assert list(drv.ledger.reservations()) == []


@pytest.mark.parametrize(
    ("seclabel", "message"),
    [
        (
            Seclabel(SeclabelType.DYNAMIC, "selinux", True, label="system_u:system_r:svirt_t:s0"),
            "security label already defined for VM",
        ),
        (
            Seclabel(SeclabelType.DYNAMIC, "selinux", True, imagelabel=FILE_CONTEXT),
            "security image label already defined for VM",
        ),
        (
            Seclabel(SeclabelType.DYNAMIC, "dac", True),
            "security label model dac is not supported with selinux",
        ),
    ],
)
def test_gen_label_preconditions(tmp_path: Path, seclabel: Seclabel, message: str) -> None:
    mgr = SecurityManager(config(tmp_path))
    drv = mgr.selinux
    assert drv is not None
    with pytest.raises(SecurityError) as info:
        drv.gen_label(domain("vm"), seclabel)
    assert str(info.value) == f"internal error: {message}"
    assert list(drv.ledger.reservations()) == []


LIVE = (
    "<seclabel type='dynamic' model='selinux' relabel='yes'>"
    "<label>system_u:system_r:svirt_t:s0:c41,c264</label>"
    "<imagelabel>system_u:object_r:svirt_image_t:s0:c41,c264</imagelabel></seclabel>"
)


def test_live_xml_labels_are_adopted_and_reserved(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    sl = selinux_label(mgr.gen_labels(domain("live", LIVE, live=True)))
    assert sl.label == "system_u:system_r:svirt_t:s0:c41,c264"
    assert sl.imagelabel == "system_u:object_r:svirt_image_t:s0:c41,c264"
    drv = mgr.selinux
    assert drv is not None
    assert drv.ledger.owner("s0:c41,c264") == "live"
    with pytest.raises(SecurityError, match="already reserved"):
        mgr.gen_labels(domain("other", LIVE, live=True))


def test_release_clears_generated_parts_and_frees_the_pair(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path, daemon_context="system_u:system_r:virtd_t:s0-s0:c0.c7"))
    live = mgr.gen_labels(domain("vm"))
    level = selinux_label(live).label
    assert level is not None
    out = selinux_label(mgr.release_labels(live))
    assert (out.label, out.imagelabel, out.model) == (None, None, "selinux")
    got = {selinux_label(mgr.gen_labels(domain(f"d{i}"))).label for i in range(28)}
    assert level in got  # every pair available again


def test_reserve_label_on_reconnect_uses_the_recorded_label(tmp_path: Path) -> None:
    mgr = SecurityManager(config(tmp_path))
    drv = mgr.selinux
    assert drv is not None
    sl = Seclabel(SeclabelType.DYNAMIC, "selinux", True, label="system_u:system_r:svirt_t:s0:c7,c9")
    drv.reserve_label(domain("running"), sl, pid=None)
    assert drv.ledger.owner("s0:c7,c9") == "running"
    drv.reserve_label(domain("static"), replace(sl, type=SeclabelType.STATIC), pid=None)
    assert drv.ledger.owner("s0:c7,c9") == "running"  # static and none are not reserved


def test_unenforced_warning_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Once per boot for a state directory, not on every command (each CLI run is a new
    process, so a per-process flag would repeat it every time)."""
    with caplog.at_level(logging.WARNING, logger="svirt.security.manager"):
        SecurityManager(config(tmp_path))
        SecurityManager(config(tmp_path))
    messages = [r.getMessage() for r in caplog.records if r.name == "svirt.security.manager"]
    assert len(messages) == 1
    assert "nothing is enforced on this host" in messages[0]
