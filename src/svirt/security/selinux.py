"""The SELinux driver (libvirt-security-spec §3–§7).

Label generation follows libvirt exactly: the base contexts come from the policy's
``virtual_domain_context`` / ``virtual_image_context`` files, user and role from the
daemon's own context (``getcon``, or ``daemon_context`` in svirt.conf where SELinux is
off), the category pair from the MCS ledger within the daemon's category range.

Where the kernel has SELinux off but the driver was named explicitly, labels are still
written (they are the ``security.selinux`` xattr) and failures to write them are fatal
as on an enforcing host, since the VM would be denied on one; the process label is
recorded, not applied.

svirt's ``relabel='optional'`` (the libvir-list RFC in the seeds) asks the binary policy
whether the VM's process label can already use read-only or shareable media with the
label they carry; if it can, the media keep it. The policy oracle is loaded once per
process (:func:`shared_policy_oracle`) or injected (:meth:`SELinuxDriver.bind_oracle`),
so a domain start that also runs the pre-flight check reads the policy once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from svirt.conf import Config
from svirt.context import MLSRange, SecurityContext
from svirt.domain.model import DeviceSeclabel, Domain, Seclabel, SeclabelType
from svirt.domain.resources import BOOT_FILES, Resource, ResourceKind
from svirt.errors import (
    PREFIX_INTERNAL,
    ContextError,
    LabelSystemError,
    OperationInvalid,
    PolicyError,
    SecurityError,
)
from svirt.host import devices as host_devices
from svirt.host import selinux as host_selinux
from svirt.host.namespace import filesystem_type
from svirt.policy.oracle import (
    Access,
    PolicyOracle,
    changed_booleans,
    default_policy_path,
    oracle_with_booleans,
    tclass_for_mode,
)
from svirt.security import remember as rem
from svirt.security.driver import Action, LabelOp, Left, Outcome, Preview, shared_medium_rule
from svirt.security.ledger import Ledger

__all__ = [
    "SELinuxDriver",
    "VirtContexts",
    "load_virt_contexts",
    "mcs_range",
    "shared_policy_oracle",
]

log = logging.getLogger(__name__)
_RECALLED = frozenset({ResourceKind.INPUT, ResourceKind.MEMORY, ResourceKind.NVRAM})
_SOFT_ERRNOS = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EROFS)
_warned_tcg = False
_oracles: dict[
    str,
    tuple[
        tuple[int, int, int, int],
        PolicyOracle,
        dict[tuple[tuple[str, bool], ...], PolicyOracle],
    ],
] = {}
_oracles_lock = threading.Lock()


def shared_policy_oracle(policy_path: Path | None = None) -> PolicyOracle:
    """The process's oracle for a binary policy (``None``: the installed one), loaded
    on first use and again only when the file changes (``semodule -B``, ``setsebool
    -P``). Raises PolicyError when there is no usable policy."""
    path = policy_path if policy_path is not None else default_policy_path()
    if path is None:
        raise PolicyError(
            "no binary SELinux policy installed under /etc/selinux "
            "(install selinux-policy-default, or set policy_path in svirt.conf)"
        )
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PolicyError(f"cannot read binary policy {path}: {exc.strerror}") from None
    version = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    key = os.path.abspath(path)
    live = host_selinux.active_booleans()
    with _oracles_lock:
        cached = _oracles.get(key)
        if cached is None or cached[0] != version:
            cached = (version, PolicyOracle(Path(key)), {})
            _oracles[key] = cached
        oracle = cached[1]
        # The kernel decides with the booleans it has now, which `setsebool` without -P
        # changes without touching the file: ask a policy with those values (found in
        # the lab: virt_use_execmem on at run time, off in policy.33).
        changed = changed_booleans(oracle, live)
        if not changed:
            return oracle
        bkey = tuple(sorted(changed.items()))
        variant = cached[2].get(bkey)
        if variant is None:
            variant = oracle_with_booleans(oracle, changed)
            cached[2][bkey] = variant
        return variant


@dataclass(frozen=True, slots=True)
class VirtContexts:
    """The policy's base contexts for VMs (spec §3.1)."""

    domain_context: str
    alt_domain_context: str | None
    file_context: str
    content_context: str | None


def _read_context_file(path: Path, limit: int, message: str) -> list[str]:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit)
    except OSError as exc:
        raise LabelSystemError(f"{message}: {exc.strerror}", exc.errno or errno.EIO) from None
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    return [ln.strip() for ln in lines]


def _boolean_on(name: str) -> bool:
    """A policy boolean's value where SELinux is active; False where it cannot be read
    (the hint is then given, which is what a user of such a host needs)."""
    try:
        return host_selinux.boolean_active(name)
    except OSError:
        return False


def load_virt_contexts(selinux_root: Path | None = None) -> VirtContexts:
    """Read virtual_domain_context and virtual_image_context, with libvirt's texts."""
    if selinux_root is not None:
        dpath = selinux_root / "contexts" / "virtual_domain_context"
        ipath = selinux_root / "contexts" / "virtual_image_context"
    else:
        dpath = host_selinux.virtual_domain_context_path()
        ipath = host_selinux.virtual_image_context_path()
    dom = _read_context_file(
        dpath, 1024, f"cannot read SELinux virtual domain context file '{dpath}'"
    )
    img_raw = _read_context_file(
        ipath, 2048, f"cannot read SELinux virtual image context file {ipath}"
    )
    if not dom[0] or not img_raw[0]:
        raise SecurityError(
            f"cannot read SELinux virtual domain context file '{dpath}'"
            if not dom[0]
            else f"cannot read SELinux virtual image context file {ipath}"
        )
    for ctx in (*dom[:2], *img_raw[:2]):
        if ctx:
            try:
                SecurityContext.parse(ctx)
            except ContextError as exc:
                raise SecurityError(
                    PREFIX_INTERNAL + f"Unable to parse base SELinux context '{ctx}'"
                ) from exc
    # The content context exists only when the file has a newline after line 1.
    content = img_raw[1] if len(img_raw) > 1 and img_raw[1] else None
    alt = dom[1] if len(dom) > 1 and dom[1] else None
    return VirtContexts(dom[0], alt, img_raw[0], content)


def mcs_range(daemon_context: str) -> tuple[int, int, int]:
    """(sensitivity, catMin, catMax) from the daemon's context (spec §3.2)."""
    parts = daemon_context.split(":", 3)
    if len(parts) < 3:
        raise SecurityError(
            PREFIX_INTERNAL + f"Unable to parse current SELinux context '{daemon_context}'"
        )
    rng = parts[3] if len(parts) == 4 else "s0"
    low, _, cats = rng.partition(":")
    sens_text = low.partition("-")[0]
    try:
        sens = int(sens_text[1:]) if sens_text.startswith("s") else -1
    except ValueError:
        sens = -1
    if sens < 0:
        raise SecurityError(
            PREFIX_INTERNAL + f"Unable to parse current SELinux context '{daemon_context}'"
        )
    if not cats:
        return sens, 0, 1023

    def cat_number(text: str) -> tuple[int, str]:
        if not text.startswith("c"):
            raise SecurityError(PREFIX_INTERNAL + f"Cannot parse category in {cats}")
        digits = ""
        for ch in text[1:]:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            raise SecurityError(PREFIX_INTERNAL + f"Cannot parse category in {cats}")
        return int(digits), text[1 + len(digits) :]

    cat_min, rest = cat_number(cats)
    if not rest:
        raise SecurityError(PREFIX_INTERNAL + "No category range available")
    if not rest.startswith("."):
        raise SecurityError(PREFIX_INTERNAL + f"Cannot parse category in {cats}")
    cat_max, rest = cat_number(rest[1:])
    if rest:
        raise SecurityError(PREFIX_INTERNAL + f"Cannot parse category in {cats}")
    return sens, cat_min, cat_max


class SELinuxDriver:
    """sVirt's SELinux driver. ``ledger`` is the host's MCS ledger."""

    name = "selinux"

    def __init__(self, cfg: Config, *, oracle: PolicyOracle | None = None) -> None:
        self.cfg = cfg
        self.contexts = load_virt_contexts(cfg.selinux_root)
        self.daemon_context = self._daemon_context()
        self.sens, self.cat_min, self.cat_max = mcs_range(self.daemon_context)
        self.enforcing = host_selinux.getenforce()
        # Without SELinux in the kernel nothing would stop a VM from using a file it
        # could not be labelled for; be strict so the failure shows here, not on a real
        # host. With SELinux permissive, libvirt's lenient policy applies.
        self.strict = self.enforcing or not host_selinux.is_enabled()
        self._ledger: Ledger | None = None
        self._oracle: PolicyOracle | None = oracle
        self.policy_error: str | None = None  # why no oracle could be loaded

    def _daemon_context(self) -> str:
        try:
            return host_selinux.getcon()
        except OSError:
            # SELinux off: getcon fails with EINVAL. Use the configured daemon context.
            return self.cfg.daemon_context

    def bind_ledger(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise SecurityError("internal error: the MCS ledger is not open")
        return self._ledger

    def bind_oracle(self, oracle: PolicyOracle | None) -> None:
        """Use this oracle for ``relabel='optional'`` and pre-flight (None: load it)."""
        self._oracle = oracle
        self.policy_error = None

    def policy_oracle(self) -> PolicyOracle | None:
        """The bound oracle, else the configured policy's (:func:`shared_policy_oracle`);
        None when no policy can be loaded, with the reason in :attr:`policy_error`."""
        if self._oracle is None and self.policy_error is None:
            try:
                self._oracle = shared_policy_oracle(self.cfg.policy_path)
            except PolicyError as exc:
                self.policy_error = exc.message
        return self._oracle

    # --- labels -------------------------------------------------------------------------

    def _daemon(self) -> SecurityContext:
        try:
            return SecurityContext.parse(self.daemon_context)
        except ContextError:
            raise SecurityError(
                PREFIX_INTERNAL + f"Unable to parse current SELinux context '{self.daemon_context}'"
            ) from None

    def imagelabel_for(self, mcs: str) -> str:
        """``file_context`` with the daemon's user and the given range (spec §3.4)."""
        base = SecurityContext.parse(self.contexts.file_context)
        try:
            rng = MLSRange.parse(mcs)
        except ContextError:
            raise SecurityError(
                PREFIX_INTERNAL + f"Unable to set SELinux context MCS '{mcs}'"
            ) from None
        return str(base.with_user(self._daemon().user).with_range(rng))

    def _template(self, domain: Domain, sl: Seclabel) -> str:
        global _warned_tcg
        if sl.baselabel:
            return sl.baselabel
        if domain.type == "qemu":
            if self.contexts.alt_domain_context:
                return self.contexts.alt_domain_context
            if not _warned_tcg:
                _warned_tcg = True
                log.warning(
                    "SELinux policy does not define a domain type for QEMU TCG. Guest startup "
                    "may be denied due to missing 'execmem' privilege unless the "
                    "'virt_use_execmem' policy boolean is enabled"
                )
        return self.contexts.domain_context

    def gen_label(self, domain: Domain, sl: Seclabel) -> Seclabel:
        if sl.type is SeclabelType.DYNAMIC and sl.label:
            raise SecurityError(PREFIX_INTERNAL + "security label already defined for VM")
        if sl.imagelabel:
            raise SecurityError(PREFIX_INTERNAL + "security image label already defined for VM")
        if sl.model is not None and sl.model != "selinux":
            raise SecurityError(
                PREFIX_INTERNAL + f"security label model {sl.model} is not supported with selinux"
            )
        label: str | None = None
        if sl.type is SeclabelType.STATIC:
            assert sl.label is not None  # the parser requires it
            try:
                ctx = SecurityContext.parse(sl.label)
            except ContextError:
                raise SecurityError(
                    PREFIX_INTERNAL + f"unable to allocate socket security context '{sl.label}'"
                ) from None
            if ctx.range is None:
                raise SecurityError(PREFIX_INTERNAL + "unable to get selinux context range")
            mcs = sl.label.split(":", 3)[3]
            self.ledger.reserve(domain.name, mcs, static=True, label=sl.label)
            label = sl.label
        elif sl.type is SeclabelType.DYNAMIC:
            mcs = self.ledger.allocate(domain.name)
            template = self._template(domain, sl)
            try:
                base = SecurityContext.parse(template)
            except ContextError:
                self.ledger.release(domain.name)
                raise SecurityError(
                    PREFIX_INTERNAL + f"Unable to parse base SELinux context '{template}'"
                ) from None
            daemon = self._daemon()
            label = str(
                base.with_user(daemon.user).with_role(daemon.role).with_range(MLSRange.parse(mcs))
            )
        else:
            mcs = f"s{self.sens}"
        return replace(sl, model="selinux", label=label, imagelabel=self.imagelabel_for(mcs))

    def adopt_label(self, domain: Domain, sl: Seclabel) -> Seclabel:
        """Use the labels a live XML already carries (reserve them, derive a missing
        imagelabel)."""
        if sl.type is SeclabelType.NONE or sl.label is None:
            return sl
        mcs = sl.label.split(":", 3)[3] if sl.label.count(":") >= 3 else f"s{self.sens}"
        self.ledger.reserve(domain.name, mcs, static=sl.type is SeclabelType.STATIC, label=sl.label)
        if sl.imagelabel is None:
            sl = replace(sl, imagelabel=self.imagelabel_for(mcs))
        return sl

    def reserve_label(self, domain: Domain, sl: Seclabel, pid: int | None) -> None:
        if sl.type is not SeclabelType.DYNAMIC:
            return
        label = sl.label
        if pid is not None and host_selinux.is_enabled():
            try:
                label = host_selinux.getpidcon(pid)
            except OSError as exc:
                raise LabelSystemError(
                    f"unable to get PID {pid} security context: {exc.strerror}", exc.errno or 0
                ) from None
        if label is None:
            return
        self.ledger.reserve(domain.name, label.split(":", 3)[3], label=label)

    def release_label(self, domain: Domain, sl: Seclabel) -> Seclabel:
        self.ledger.release(domain.name)
        if sl.type is SeclabelType.DYNAMIC:
            return replace(sl, label=None, imagelabel=None)
        return replace(sl, imagelabel=None)

    # --- planning -----------------------------------------------------------------------

    def _disk_label(self, res: Resource, img: str) -> str | None:
        """The label for one chain element (spec §5.1), None to skip it."""
        own, parent = res.seclabel("selinux"), res.parent_seclabel("selinux")
        for sl in (own, parent):
            if sl is not None and (not sl.relabel or sl.label):
                return sl.label if sl.relabel else None
        if res.chain_top:
            if res.shareable:
                return self.contexts.file_context
            if res.readonly:
                return self.contexts.content_context
            return img
        return self.contexts.content_context

    @staticmethod
    def _optional_seclabel(res: Resource) -> DeviceSeclabel | None:
        """The element's own, else its chain top's, ``relabel='optional'`` seclabel."""
        for labels in (res.seclabels, res.parent_seclabels):
            for sl in labels:
                if sl.model in (None, "selinux") and sl.relabel_optional:
                    return sl
        return None

    def _keeps_label(self, domain: Domain, res: Resource, path: str) -> bool:
        """``relabel='optional'``: True when the media keep their current label because
        the VM's process label can already use them as QEMU needs (read for read-only
        media and backing layers, read-write for shareable disks). Only read-only and
        shareable media qualify: a private writable disk must carry the VM's categories,
        or another VM could reach it (the parser refuses it there too)."""
        sl = domain.seclabel("selinux")
        wanted = self._optional_seclabel(res) is not None or (
            sl is not None and sl.relabel_optional
        )
        if not wanted or not (res.readonly or res.shareable):
            return False
        process = sl.label if sl is not None else None
        if process is None:
            return False
        oracle = self.policy_oracle()
        if oracle is None:
            log.warning(
                "relabel='optional' on %s: cannot ask the policy (%s); relabelling %s as usual",
                res.owner,
                self.policy_error,
                path,
            )
            return False
        try:
            st = os.stat(path)
            current = host_selinux.getfilecon(path)
        except OSError:
            return False  # labelling reports the real error
        if current is None:
            return False
        access = Access.READ if res.readonly else Access.READ_WRITE
        decision = oracle.file_access(process, current, access, tclass_for_mode(st.st_mode))
        if not decision.allowed:
            log.debug(
                "relabel='optional' on %s: %s cannot %s %s labelled %s (%s); relabelling",
                res.owner,
                process,
                access.value,
                path,
                current,
                decision.describe(),
            )
            return False
        log.info(
            "relabel='optional' on %s: %s keeps its label %s, which %s can already %s",
            res.owner,
            path,
            current,
            process,
            access.value,
        )
        return True

    def set_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        sl = domain.seclabel("selinux")
        if sl is None or not sl.relabel or sl.imagelabel is None:
            return []
        img = sl.imagelabel
        content = self.contexts.content_context
        ops: list[LabelOp] = []

        def add(
            path: str, label: str | None, remember: bool, res: Resource, readonly: bool = False
        ) -> None:
            if label is not None:
                ops.append(
                    LabelOp("selinux", Action.SET, path, label, remember, res.owner, readonly)
                )

        for res in resources:
            if res.kind in (ResourceKind.DISK, ResourceKind.BACKING):
                if res.storage_type == "dir" and res.chain_top and res.path:
                    log.warning(
                        "Unable to relabel directory tree %s for disk %s",
                        res.path,
                        res.owner.removeprefix("disk "),
                    )
                    continue
                own = res.seclabel("selinux")
                if not res.local or not res.path or (own is not None and own.labelskip):
                    # labelskip (old status XML) means labelling failed before; restore
                    # skips such disks, so labelling them would leave state behind.
                    continue
                remember = res.chain_top and not res.readonly and not res.shareable
                label = self._disk_label(res, img)
                if label is not None and self._keeps_label(domain, res, res.path):
                    # Nothing is set, so nothing is remembered; restore_ops never
                    # touches read-only or shareable media, so nothing is restored.
                    continue
                add(res.path, label, remember, res, readonly=res.readonly or not res.chain_top)
            elif res.kind is ResourceKind.HOSTDEV and res.hostdev is not None:
                h = res.hostdev
                label = img
                if h.type == "scsi":
                    label = (
                        self.contexts.file_context
                        if h.shareable
                        else (content if h.readonly else img)
                    )
                remember = h.type not in ("pci", "mdev") or h.pci_driver == "kvm"
                for p in host_devices.hostdev_paths(h):
                    add(p, label, remember, res)
            elif res.kind is ResourceKind.TPM and res.path:
                add(res.path, img, False, res)
                add(host_devices.tpm_cancel_path(res.path), img, False, res)
            elif res.kind is ResourceKind.CHARDEV and res.path:
                chr_sl = res.seclabel("selinux")
                if chr_sl is not None and not chr_sl.relabel:
                    continue
                label = chr_sl.label if chr_sl is not None and chr_sl.label else img
                for p in host_devices.chardev_paths(res):
                    add(p, label, True, res)
            elif (
                res.kind in (ResourceKind.INPUT, ResourceKind.MEMORY, ResourceKind.NVRAM)
                and res.path
            ):
                add(res.path, img, True, res)
            elif res.kind in BOOT_FILES and res.path:
                add(res.path, content, True, res, readonly=True)
        return ops

    def restore_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        sl = domain.seclabel("selinux")
        if sl is None or not sl.relabel:
            return []
        ops: list[LabelOp] = []

        def add(path: str, recall: bool, res: Resource) -> None:
            ops.append(LabelOp("selinux", Action.RESTORE, path, None, recall, res.owner))

        for res in resources:
            if res.kind is ResourceKind.DISK:
                if _disk_not_restored(res) is not None or res.path is None:
                    continue
                add(res.path, True, res)
            elif res.kind is ResourceKind.HOSTDEV and res.hostdev is not None:
                h = res.hostdev
                if h.type == "scsi" and (h.shareable or h.readonly):
                    continue
                recall = h.type not in ("pci", "mdev") or h.pci_driver == "kvm"
                for p in host_devices.hostdev_paths(h):
                    add(p, recall, res)
            elif res.kind is ResourceKind.TPM and res.path:
                add(res.path, False, res)
                add(host_devices.tpm_cancel_path(res.path), False, res)
            elif res.kind is ResourceKind.CHARDEV and res.path:
                chr_sl = res.seclabel("selinux")
                if chr_sl is not None and not chr_sl.relabel:
                    continue
                if res.chardev_type == "unix" and res.chardev_mode != "connect":
                    continue
                for p in host_devices.chardev_paths(res):
                    add(p, True, res)
            elif (res.kind in BOOT_FILES or res.kind in _RECALLED) and res.path:
                add(res.path, True, res)
        return ops

    def left(self, domain: Domain, resources: Sequence[Resource], action: Action) -> list[Left]:
        """What the rules above leave alone, and why (issue 14: said, not implied)."""
        sl = domain.seclabel("selinux")
        if sl is None or sl.type is SeclabelType.NONE:
            return []
        out: list[Left] = []
        for res in resources:
            if not res.path or not res.local:
                continue
            if not sl.relabel:
                if res.chain_top:
                    out.append(Left("selinux", action, res.path, res.owner, "relabel='no'"))
                continue
            if res.kind not in (ResourceKind.DISK, ResourceKind.BACKING):
                continue
            why: str | None
            if action is Action.SET:
                why = None
                if sl.imagelabel is not None and self._disk_label(res, sl.imagelabel) is None:
                    why = "relabel='no' on this disk"
                elif sl.imagelabel is not None and self._keeps_label(domain, res, res.path):
                    why = f"relabel='optional': {sl.label} can already use it as it is labelled"
            elif res.kind is ResourceKind.BACKING:
                why = shared_medium_rule("backing")
            else:
                why = _disk_not_restored(res) or None
            if why is None:
                continue
            value = None
            if action is Action.RESTORE and "never restores" in why and sl.imagelabel:
                # What stays is the label svirt gave it, if it still carries it.
                given = self._disk_label(res, sl.imagelabel)
                current = self.current(res.path)
                value = current if given is not None and current == given else None
            out.append(Left("selinux", action, res.path, res.owner, why, value))
        return out

    def preview(self, op: LabelOp) -> Preview:
        now = self.current(op.path)
        undo = None  # the manager says it from the restore plan
        if (
            op.readonly
            and not op.remember
            and op.value == self.contexts.content_context
            and now == self.contexts.file_context
        ):
            return Preview(Outcome.SHARED_KEPT, f"label {now} kept (shareable already)", undo)
        if now == op.value:
            return Preview(Outcome.DONE, f"label {op.value} (already)", undo)
        return Preview(Outcome.DONE, f"label {op.value}", undo)

    # --- applying -----------------------------------------------------------------------

    def current(self, path: str) -> str | None:
        try:
            return host_selinux.getfilecon(path)
        except OSError:
            return None

    def apply(self, op: LabelOp, target: str | None = None) -> Outcome:
        if op.action is Action.SET:
            assert op.value is not None
            if (
                op.readonly
                and not op.remember
                and op.value == self.contexts.content_context
                and self._current(target or op.path) == self.contexts.file_context
            ):
                # Shared read-write already (another VM uses it <shareable/>): that label
                # lets every VM read it; virt_content_t would take its writes away from
                # the running VM, for good (issue 11).
                log.debug("selinux: %s is shareable already: label kept", op.path)
                return Outcome.SHARED_KEPT
            return self._set(op.path, target or op.path, op.value, op.remember)
        return self._restore(op.path, target, op.remember)

    @staticmethod
    def _current(target: str) -> str | None:
        try:
            return host_selinux.getfilecon(target)
        except OSError:
            return None

    def _setfilecon(self, name: str, target: str, tcon: str) -> Outcome:
        try:
            host_selinux.setfilecon(target, tcon)
        except OSError as exc:
            if exc.errno in _SOFT_ERRNOS:
                real = os.readlink(target) if target.startswith("/proc/") else target
                if (filesystem_type(real) or "").startswith("nfs") and not _boolean_on(
                    "virt_use_nfs"
                ):
                    log.log(
                        logging.WARNING if self.enforcing else logging.INFO,
                        "Setting security context '%s' on '%s' not supported. "
                        "Consider setting virt_use_nfs",
                        tcon,
                        name,
                    )
                else:
                    log.info("Setting security context '%s' on '%s' not supported", tcon, name)
                return Outcome.SOFT_FAILED
            if exc.errno == errno.ENOENT or self.strict:
                raise LabelSystemError(
                    f"unable to set security context '{tcon}' on '{name}': {exc.strerror}",
                    exc.errno or errno.EIO,
                ) from None
            log.warning(
                "unable to set security context '%s' on '%s' (errno %d)", tcon, name, exc.errno
            )
            return Outcome.SOFT_FAILED
        log.debug("selinux: %s -> %s", name, tcon)
        return Outcome.DONE

    def _set(self, name: str, target: str, tcon: str, remember: bool) -> Outcome:
        counted = False
        if remember:
            try:
                econ = host_selinux.getfilecon(target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise LabelSystemError(
                        f"unable to get SELinux context of {name}: {exc.strerror}",
                        exc.errno or errno.EIO,
                    ) from None
                econ = None
            if econ is None:
                # No label at all (issue 11: it kept the VM's label for good). libvirt's
                # remembered xattr can only hold a context, so the absence is marked
                # in svirt's own xattr and the label removed again on restore.
                _mark_unlabelled(target)
            if econ is not None:
                count = rem.remember(target, "selinux", econ, name=name)
                counted = count is not None
                if count is not None and count > 1 and econ != tcon:
                    rem.take_back(target, "selinux", name=name)
                    raise OperationInvalid(
                        f"Setting different SELinux label on {name} which is already in use"
                    )
        try:
            outcome = self._setfilecon(name, target, tcon)
        except SecurityError:
            if counted:
                rem.take_back(target, "selinux", name=name)
            raise
        if outcome is Outcome.SOFT_FAILED and counted:
            rem.take_back(target, "selinux", name=name)
        return outcome

    def _restore(self, name: str, target: str | None, recall: bool) -> Outcome:
        """Restore one path (spec §6.1). Without a pinned ``target`` the path is resolved
        here; the file-contexts lookup always uses the canonical path."""
        try:
            if target is None:
                st = os.lstat(name)
                target = name
                if stat.S_ISLNK(st.st_mode) or not os.path.isabs(name):
                    target = os.path.realpath(name, strict=True)
                canonical = target
            else:
                canonical = os.readlink(target) if target.startswith("/proc/") else target
            st = os.stat(target)
        except OSError as exc:
            log.warning("cannot resolve symlink %s: %s", name, exc.strerror)
            raise LabelSystemError(
                f"cannot resolve symlink {name}: {exc.strerror}", exc.errno or errno.EIO
            ) from None
        label: str | None = None
        recalled = False
        if recall:
            got = rem.recall(target, "selinux", name=name)
            if got is rem.IN_USE:
                return Outcome.IN_USE
            if isinstance(got, str):
                label = got
                recalled = True
        if label is None and recall and _take_unlabelled_mark(target):
            try:
                os.removexattr(target, "security.selinux")
            except OSError as exc:
                raise LabelSystemError(
                    f"unable to remove the security context of '{name}': {exc.strerror}",
                    exc.errno or errno.EIO,
                ) from None
            log.debug("selinux: %s had no label: label removed", name)
            return Outcome.DONE
        if label is None:
            label = host_selinux.lookup_default_label(canonical, st.st_mode)
            if label is None:
                log.warning("cannot lookup default selinux label for %s", name)
                return Outcome.NO_DEFAULT
        outcome = self._setfilecon(name, target, label)
        if outcome is Outcome.DONE:
            return Outcome.RESTORED if recalled else Outcome.DEFAULTED
        return outcome


def _disk_not_restored(res: Resource) -> str | None:
    """Why a disk's label is not restored ("" when it is no local file), or None.

    Only the top of a chain is restored, and never read-only or shareable media: other
    VMs may still be using them (libvirt's reasoning). This also keeps
    relabel='optional' symmetric: media it left alone are never restored."""
    own = res.seclabel("selinux")
    if not res.local or not res.path or res.storage_type == "dir":
        return ""
    if own is not None and own.labelskip:
        return ""
    if own is not None and not own.relabel:
        return "relabel='no' on this disk"
    if res.readonly or res.shareable:
        return shared_medium_rule("read-only" if res.readonly else "shareable")
    return None


UNLABELLED_XATTR = "trusted.svirt.security.selinux_unlabelled"


def _mark_unlabelled(target: str) -> None:
    with contextlib.suppress(OSError):  # no xattrs here: nothing can be remembered
        os.setxattr(target, UNLABELLED_XATTR, b"1")


def _take_unlabelled_mark(target: str) -> bool:
    try:
        os.removexattr(target, UNLABELLED_XATTR)
    except OSError:
        return False
    return True
