"""The DAC driver (libvirt-security-spec §8): QEMU's uid/gid on its resources.

Two modes (svirt.conf ``dac_mode``):

- ``chown`` (libvirt's): chown to the QEMU identity, remembering the original owner in
  ``trusted.libvirt.security.{dac,ref_dac,timestamp_dac}`` as ``+uid:+gid``.
- ``acl`` (svirt's, from the libvir-list RFC): add a named-user ACL entry for the QEMU
  user (``rw`` for writable resources, ``r`` for read-only ones, ``x`` on directories it
  must search), refcounted in ``trusted.svirt.security.acl_<uid>`` together with the
  entry and mask it replaced, and removed on restore leaving the ACL exactly as it was.
  Where the filesystem has no ACLs, it falls back to chown and says so.

In both modes the change is skipped when the QEMU identity can already use the file as
needed (the RFC's "relabel only if needed"), though the reference is still counted so
that restore puts back exactly what was there.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import replace

from svirt.conf import Config
from svirt.domain.model import Domain, Seclabel, SeclabelType
from svirt.domain.resources import BOOT_FILES, Resource, ResourceKind
from svirt.errors import (
    PREFIX_INTERNAL,
    PREFIX_INVALID_ARG,
    ConfigError,
    LabelSystemError,
    OperationInvalid,
    SecurityError,
)
from svirt.host import acl as host_acl
from svirt.host import devices as host_devices
from svirt.host.ids import resolve_gid, resolve_uid
from svirt.host.remembered import ACL_XATTR_PREFIX, AclRef, format_acl_ref, parse_acl_ref
from svirt.security import remember as rem
from svirt.security.driver import Action, LabelOp, Left, Outcome, Preview, shared_medium_rule
from svirt.security.identity import IdentityLedger

__all__ = [
    "ACL_XATTR_PREFIX",
    "AclRef",
    "DACDriver",
    "format_ids",
    "parse_acl_ref",
    "parse_ids",
]

log = logging.getLogger(__name__)
_SOFT_CHOWN = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.EPERM, errno.EROFS)
_NO_ACL = (errno.EOPNOTSUPP, errno.ENOTSUP)


def format_ids(uid: int, gid: int) -> str:
    return f"+{uid}:+{gid}"


def parse_ids(label: str) -> tuple[int, int]:
    """``owner:group``, split at the first ``:``, each side resolved the libvirt way."""
    user, sep, group = label.partition(":")
    if not sep:
        raise SecurityError(PREFIX_INVALID_ARG + f"Failed to parse uid and gid from '{label}'")
    try:
        return resolve_uid(user), resolve_gid(group)
    except ConfigError:
        raise SecurityError(
            PREFIX_INVALID_ARG + f"Failed to parse uid and gid from '{label}'"
        ) from None


def _groups_of(uid: int, gid: int) -> frozenset[int]:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return frozenset({gid})
    return frozenset({gid, *os.getgrouplist(name, gid)})


class DACDriver:
    name = "dac"

    def __init__(self, cfg: Config, identities: IdentityLedger | None = None) -> None:
        self.cfg = cfg
        self.uid = resolve_uid(cfg.user)
        self.gid = resolve_gid(cfg.group)
        # Per-VM identities (issue 11): a dynamic DAC label is the VM's own uid:gid, and
        # files are granted by ACL entry (chown cannot give one shared medium to two
        # identities; where ACLs are missing it still falls back to chown).
        self.identities = identities
        self.acl_mode = cfg.dac_mode == "acl" or identities is not None
        self._groups: dict[tuple[int, int], frozenset[int]] = {}

    # --- labels -------------------------------------------------------------------------

    def gen_label(self, domain: Domain, sl: Seclabel) -> Seclabel:
        if sl.imagelabel:
            raise SecurityError(PREFIX_INTERNAL + "security image label already defined for VM")
        if sl.model is not None and sl.model != "dac":
            # sic: libvirt's DAC driver says "selinux" here.
            raise SecurityError(
                PREFIX_INTERNAL + f"security label model {sl.model} is not supported with selinux"
            )
        label = sl.label
        if sl.type is SeclabelType.STATIC:
            if not label:
                raise SecurityError(
                    PREFIX_INTERNAL
                    + f"missing label for static security driver in domain {domain.name}"
                )
            parse_ids(label)
        elif sl.type is SeclabelType.DYNAMIC:
            if self.identities is not None:
                n = self.identities.reserve(domain.name)
                label = format_ids(n, n)
            else:
                label = format_ids(self.uid, self.gid)
        else:
            return replace(sl, model="dac")
        imagelabel = label if sl.relabel else None
        return replace(sl, model="dac", label=label, imagelabel=imagelabel)

    def adopt_label(self, domain: Domain, sl: Seclabel) -> Seclabel:
        if sl.label is not None:
            parse_ids(sl.label)
        if sl.relabel and sl.imagelabel is None:
            return replace(sl, imagelabel=sl.label)
        return sl

    def reserve_label(self, domain: Domain, sl: Seclabel, pid: int | None) -> None:
        return None

    def release_label(self, domain: Domain, sl: Seclabel) -> Seclabel:
        if self.identities is not None and sl.type is not SeclabelType.STATIC:
            self.identities.release(domain.name)
        if sl.type is SeclabelType.DYNAMIC:
            return replace(sl, label=None, imagelabel=None)
        return replace(sl, imagelabel=None)

    def process_ids(self, domain: Domain) -> tuple[int, int]:
        """The uid/gid QEMU runs as: the domain's DAC label, else svirt.conf's."""
        sl = domain.seclabel("dac")
        if sl is not None and sl.label:
            return parse_ids(sl.label)
        return self.uid, self.gid

    # --- planning -----------------------------------------------------------------------

    def _labels(self, domain: Domain) -> tuple[str, str] | None:
        sl = domain.seclabel("dac")
        if sl is None or not sl.relabel or not self.cfg.dynamic_ownership:
            return None
        dom_ids = sl.label or format_ids(self.uid, self.gid)
        img_ids = sl.imagelabel or dom_ids
        return dom_ids, img_ids

    @staticmethod
    def _disk_ids(res: Resource, img_ids: str) -> str | None:
        for sl in (res.seclabel("dac"), res.parent_seclabel("dac")):
            if sl is not None and (not sl.relabel or sl.label):
                return sl.label if sl.relabel else None
        return img_ids

    def _entries(
        self, domain: Domain, resources: Sequence[Resource]
    ) -> list[tuple[Resource, str, str, bool, bool]]:
        """(resource, path, ids, remember/recall, readonly) for every DAC-managed path."""
        labels = self._labels(domain)
        if labels is None:
            return []
        dom_ids, img_ids = labels
        out: list[tuple[Resource, str, str, bool, bool]] = []
        for res in resources:
            if res.kind in (ResourceKind.DISK, ResourceKind.BACKING):
                if not res.local or not res.path or res.storage_type == "dir":
                    continue
                ids = self._disk_ids(res, img_ids)
                if ids is not None:
                    remember = res.chain_top and not res.readonly and not res.shareable
                    out.append((res, res.path, ids, remember, res.readonly or not res.chain_top))
            elif res.kind is ResourceKind.HOSTDEV and res.hostdev is not None:
                h = res.hostdev
                if h.mode == "capabilities":
                    continue
                remember = h.type not in ("pci", "mdev") or h.pci_driver == "kvm"
                for p in host_devices.hostdev_paths(h):
                    out.append((res, p, dom_ids, remember, h.readonly))
            elif res.kind is ResourceKind.TPM and res.path:
                out.append((res, res.path, dom_ids, False, False))
            elif res.kind is ResourceKind.CHARDEV and res.path:
                chr_sl = res.seclabel("dac")
                if chr_sl is not None and not chr_sl.relabel:
                    continue
                ids = chr_sl.label if chr_sl is not None and chr_sl.label else dom_ids
                for p in host_devices.chardev_paths(res):
                    out.append((res, p, ids, True, False))
            elif res.kind in (ResourceKind.INPUT, ResourceKind.MEMORY) and res.path:
                out.append((res, res.path, dom_ids, True, False))
            elif res.kind is ResourceKind.NVRAM and res.path:
                out.append((res, res.path, img_ids, True, False))
            elif res.kind in BOOT_FILES and res.path:
                out.append((res, res.path, img_ids, True, True))
        return out

    def _search_dirs(self, path: str, ids: str) -> list[str]:
        """Ancestors QEMU's identity needs a search entry on, outermost first (ACL mode).

        Decided from what svirt never changes (owner, group and other bits, the owning
        group's entry), never from named entries, so that labelling and restoring a
        domain compute the same directories whatever other domains granted meanwhile."""
        uid, gid = parse_ids(ids)
        gids = self._gids(uid, gid)
        dirs: list[str] = []
        d = os.path.dirname(os.path.abspath(path))
        while True:
            try:
                st = os.stat(d)
                acl, _ = host_acl.read_acl(d)
            except (OSError, ValueError):
                st = None
            if st is not None and not _searchable_without_named(st, acl, uid, gids):
                dirs.append(d)
            if d == "/":
                break
            d = os.path.dirname(d)
        return list(reversed(dirs))

    def _needs_ref(self, path: str, uid: int, gid: int, need: int) -> bool:
        """A reference is needed unless the identity can use the file as needed on its
        own. A file that already carries our reference always gets one more, so that
        access granted for another domain is not taken away from this one."""
        try:
            if os.getxattr(path, f"{ACL_XATTR_PREFIX}{uid}"):
                return True
        except OSError:
            pass
        try:
            st = os.stat(path)
            acl, _ = host_acl.read_acl(path)
        except (OSError, ValueError):
            return True
        return not host_acl.can_access(st, acl, uid, self._gids(uid, gid), need)

    def _gids(self, uid: int, gid: int) -> frozenset[int]:
        key = (uid, gid)
        if key not in self._groups:
            self._groups[key] = _groups_of(uid, gid)
        return self._groups[key]

    def set_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        ops: list[LabelOp] = []
        seen_dirs: set[tuple[str, str]] = set()
        for res, path, ids, remember, readonly in self._entries(domain, resources):
            if self.acl_mode:
                for d in self._search_dirs(path, ids):
                    if (d, ids) not in seen_dirs:
                        seen_dirs.add((d, ids))
                        ops.append(LabelOp("dac", Action.SET, d, ids, True, res.owner, True))
            ops.append(LabelOp("dac", Action.SET, path, ids, remember, res.owner, readonly))
        return ops

    def restore_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        ops: list[LabelOp] = []
        dirs: list[tuple[str, str]] = []
        for res, path, ids, remember, _readonly in self._entries(domain, resources):
            if self._not_restored(res) is not None:
                continue
            if (
                res.kind is ResourceKind.CHARDEV
                and res.chardev_type == "unix"
                and (res.chardev_mode != "connect")
            ):
                continue
            ops.append(LabelOp("dac", Action.RESTORE, path, ids, remember, res.owner))
            if self.acl_mode:
                uid = parse_ids(ids)[0]
                for d in self._search_dirs(path, ids):
                    if (d, ids) not in dirs and _has_acl_ref(d, uid):
                        dirs.append((d, ids))
        # Directories last, innermost first: the reverse of how they were granted.
        ops.extend(
            LabelOp("dac", Action.RESTORE, d, ids, True, "search path")
            for d, ids in sorted(dirs, key=lambda x: len(x[0]), reverse=True)
        )
        return ops

    def _not_restored(self, res: Resource) -> str | None:
        """Why chown mode never restores a resource's owner: shared media (libvirt:
        other VMs may use them). ACL references are counted per user, so those are
        always given back."""
        if self.acl_mode:
            return None
        if res.kind is ResourceKind.BACKING:
            return shared_medium_rule("backing")
        if res.kind is ResourceKind.DISK and (res.readonly or res.shareable):
            return shared_medium_rule("read-only" if res.readonly else "shareable")
        return None

    def left(self, domain: Domain, resources: Sequence[Resource], action: Action) -> list[Left]:
        """What the rules above leave alone, and why (issue 14: said, not implied)."""
        sl = domain.seclabel("dac")
        disks = [
            r
            for r in resources
            if r.kind in (ResourceKind.DISK, ResourceKind.BACKING) and r.path and r.local
        ]
        if sl is None or sl.type is SeclabelType.NONE:
            return []
        if not sl.relabel or not self.cfg.dynamic_ownership:
            why = "relabel='no'" if not sl.relabel else "dynamic_ownership = 0"
            return [
                Left("dac", action, r.path, r.owner, why) for r in disks if r.path and r.chain_top
            ]
        out: list[Left] = []
        _dom_ids, img_ids = self._labels(domain) or ("", "")
        for res in disks:
            assert res.path is not None
            if res.storage_type == "dir":
                continue
            if self._disk_ids(res, img_ids) is None:
                out.append(Left("dac", action, res.path, res.owner, "relabel='no' on this disk"))
                continue
            rule = self._not_restored(res) if action is Action.RESTORE else None
            if rule is None:
                continue
            owner = self.current(res.path)
            ids = self._disk_ids(res, img_ids)
            # What stays is the owner svirt gave it, if it has it (a file QEMU could
            # already read was never chowned).
            value = owner if ids is not None and owner == _canonical(ids) else None
            out.append(Left("dac", action, res.path, res.owner, rule, value))
        return out

    def preview(self, op: LabelOp) -> Preview:
        """What :meth:`apply` would do to the file now (``svirt label --dry-run``)."""
        assert op.value is not None
        uid, gid = parse_ids(op.value)
        try:
            st = os.stat(op.path)
        except OSError as exc:
            return Preview(Outcome.SKIPPED, f"cannot stat: {exc.strerror}", None)
        is_dir = stat.S_ISDIR(st.st_mode)
        need = host_acl.X if is_dir else (host_acl.R if op.readonly else host_acl.R | host_acl.W)
        words = "search it" if is_dir else ("read it" if op.readonly else "read and write it")
        owner = format_ids(st.st_uid, st.st_gid)
        if not self._needs_ref(op.path, uid, gid, need) or (
            not self.acl_mode and (st.st_uid, st.st_gid) == (uid, gid)
        ):
            return Preview(
                Outcome.USABLE,
                f"skipped: {op.value} can already {words} (owner {owner} unchanged)",
                "nothing to undo",
            )
        if self.acl_mode:
            try:
                acl, _ = host_acl.read_acl(op.path)
            except (OSError, ValueError):
                acl = None
            if acl is not None:
                prev = acl.named_user(uid)
                granted = (prev.perm if prev else 0) | need
                new_acl = acl.with_named_user(uid, granted)
                if not _widens_others(acl, new_acl, uid):
                    mask = new_acl.get(host_acl.MASK)
                    change = f"ACL entry u:{uid}:{_perm(granted)} added" + (
                        f" (mask {_perm(mask.perm)})" if mask is not None else ""
                    )
                    undo = (
                        f"ACL entry u:{uid} removed (the ACL as before)"
                        if prev is None
                        else f"ACL entry back to u:{uid}:{_perm(prev.perm)}"
                    )
                    if _has_acl_ref(op.path, uid):
                        undo = f"one reference to ACL entry u:{uid} dropped"
                    return Preview(Outcome.GRANTED, change, undo)
                if is_dir:
                    return Preview(
                        Outcome.SKIPPED, "refused: an ACL entry would widen others", None
                    )
            elif is_dir:
                return Preview(Outcome.SOFT_FAILED, "no ACL support: not searchable", None)
            return Preview(Outcome.DONE, f"owner {op.value} (chown: no ACL entry possible)", None)
        return Preview(Outcome.DONE, f"owner {owner} -> {op.value} (chown)", None)

    # --- applying -----------------------------------------------------------------------

    def current(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return format_ids(st.st_uid, st.st_gid)

    def apply(self, op: LabelOp, target: str | None = None) -> Outcome:
        path = target or op.path
        if op.action is Action.SET:
            assert op.value is not None
            uid, gid = parse_ids(op.value)
            if self.acl_mode:
                return self._set_acl(op, path, uid, gid)
            return self._set_chown(op, path, uid, gid)
        return self._restore(op, path)

    def _stat(self, op: LabelOp, path: str) -> os.stat_result:
        try:
            return os.stat(path)
        except OSError as exc:
            raise LabelSystemError(
                f"unable to stat: {op.path}: {exc.strerror}", exc.errno
            ) from None

    def _set_chown(self, op: LabelOp, path: str, uid: int, gid: int) -> Outcome:
        st = self._stat(op, path)
        need = host_acl.R if op.readonly else host_acl.R | host_acl.W
        if os.path.isdir(path):
            need = host_acl.X
        needed = self._needs_ref(path, uid, gid, need) and (st.st_uid, st.st_gid) != (uid, gid)
        counted = False
        if op.remember:
            count = rem.remember(path, "dac", format_ids(st.st_uid, st.st_gid), name=op.path)
            counted = count is not None
            if needed and count is not None and count > 1 and (st.st_uid, st.st_gid) != (uid, gid):
                rem.take_back(path, "dac", name=op.path)
                raise OperationInvalid(
                    f"Setting different DAC user or group on {op.path} which is already in use"
                )
        if not needed:
            log.debug("dac: %s already usable by %d:%d, not changed", op.path, uid, gid)
            return Outcome.USABLE
        if op.remember and not counted and not self.acl_mode:
            # issue 11: this used to pass in silence, and stop said "owners restored".
            log.warning(
                "%s: no xattr support: its owner %d:%d cannot be remembered and will be "
                "root:root after stop, as with libvirt",
                op.path,
                st.st_uid,
                st.st_gid,
            )
        try:
            return self._chown(op, path, uid, gid)
        except SecurityError:
            if counted:
                rem.take_back(path, "dac", name=op.path)
            raise

    def _chown(self, op: LabelOp, path: str, uid: int, gid: int) -> Outcome:
        try:
            os.chown(path, uid, gid)
        except OSError as exc:
            if exc.errno in _SOFT_CHOWN:
                log.info(
                    "chown of %s to %d:%d not possible here: %s", op.path, uid, gid, exc.strerror
                )
                return Outcome.SOFT_FAILED
            raise LabelSystemError(
                f"unable to set user and group to '{uid}:{gid}' on '{op.path}': {exc.strerror}",
                exc.errno,
            ) from None
        log.debug("dac: %s -> %d:%d", op.path, uid, gid)
        return Outcome.DONE

    def _set_acl(self, op: LabelOp, path: str, uid: int, gid: int) -> Outcome:
        st = self._stat(op, path)
        is_dir = os.path.isdir(path)
        need = host_acl.X if is_dir else (host_acl.R if op.readonly else host_acl.R | host_acl.W)
        if not self._needs_ref(path, uid, gid, need):
            return Outcome.USABLE
        try:
            acl, _ = host_acl.read_acl(path)
        except ValueError:
            raise SecurityError(f"Unable to get ACLs on {op.path}: malformed ACL") from None
        except OSError as exc:
            if exc.errno in _NO_ACL:
                return self._fallback_chown(op, path, uid, gid)
            raise LabelSystemError(
                f"Unable to get ACLs on {op.path}: {exc.strerror}", exc.errno
            ) from None
        name = f"{ACL_XATTR_PREFIX}{uid}"
        state = _read_acl_ref(path, uid)
        prev_entry = acl.named_user(uid)
        prev_mask = acl.get(host_acl.MASK)
        if state is None:
            ref = 0
            prev = prev_entry.perm if prev_entry else None
            mask = prev_mask.perm if prev_mask else None
        else:
            ref, prev, mask, this_boot = state
            ref = ref if this_boot else 0
        granted = (prev_entry.perm if prev_entry else 0) | need
        new_acl = acl.with_named_user(uid, granted)
        if _widens_others(acl, new_acl, uid):
            if is_dir:
                # A directory is never chowned: refuse rather than widen or take it over.
                raise SecurityError(
                    f"cannot let QEMU search {op.path}: an ACL entry would widen the "
                    "access of other users its mask limits; grant it by hand "
                    f"(setfacl -m u:{uid}:x) or loosen the directory's permissions"
                )
            # The mask limits someone else's entry; raising it for QEMU would give them
            # more access while the VM runs. Chown instead, as libvirt would.
            log.warning(
                "%s: an ACL entry for QEMU would widen the mask for other users; "
                "falling back to chown",
                op.path,
            )
            return self._set_chown(op, path, uid, gid)
        try:
            os.setxattr(path, name, format_acl_ref(ref + 1, prev, mask).encode())
        except OSError as exc:
            if exc.errno in _NO_ACL:
                return self._fallback_chown(op, path, uid, gid)
            raise LabelSystemError(
                f"Unable to set XATTR {name} on {op.path}: {exc.strerror}", exc.errno
            ) from None
        try:
            host_acl.write_acl(path, new_acl)
        except OSError as exc:
            _write_or_clear_ref(path, uid, state[:3] if state is not None else None)
            if exc.errno in _NO_ACL:
                return self._fallback_chown(op, path, uid, gid)
            raise LabelSystemError(
                f"Unable to set ACLs on {op.path}: {exc.strerror}", exc.errno
            ) from None
        log.debug("dac: %s +acl u:%d:%o (st %o)", op.path, uid, granted, st.st_mode)
        return Outcome.GRANTED

    def _fallback_chown(self, op: LabelOp, path: str, uid: int, gid: int) -> Outcome:
        if os.path.isdir(path):
            # Directories are never chowned (others' files live there).
            log.warning(
                "%s has no POSIX ACL support: QEMU cannot be granted search "
                "there; it may be denied access below it",
                op.path,
            )
            return Outcome.SOFT_FAILED
        if _xattrs_supported(path):
            log.warning("%s has no POSIX ACL support: falling back to chown", op.path)
        else:
            log.warning(
                "%s has no POSIX ACL or xattr support: falling back to chown; its owner "
                "cannot be remembered and will be root:root after stop, as with libvirt",
                op.path,
            )
        return self._set_chown(op, path, uid, gid)

    def _restore(self, op: LabelOp, path: str) -> Outcome:
        uid = parse_ids(op.value)[0] if op.value else self.uid
        if _read_acl_ref(path, uid) is not None:
            return self._restore_acl(op, path, uid)
        recalled = rem.recall(path, "dac", name=op.path) if op.remember else rem.NOT_REMEMBERED
        if recalled is rem.IN_USE:
            return Outcome.IN_USE
        if isinstance(recalled, str):
            ouid, ogid = parse_ids(recalled)
        else:
            if self.acl_mode and _xattrs_supported(path):
                # No ACL reference and no remembered owner: nothing was changed here.
                return Outcome.UNCHANGED
            st = self._stat(op, path)
            qemu = parse_ids(op.value) if op.value else (self.uid, self.gid)
            if (st.st_uid, st.st_gid) != qemu:
                # libvirt chowns to root:root here; a file not owned by QEMU's identity
                # was never chowned by us, so its owner is left alone.
                return Outcome.UNCHANGED
            ouid, ogid = 0, 0
            if not _xattrs_supported(path):
                log.warning(
                    "%s: its original owner was not remembered (no xattr support): "
                    "set to root:root, as libvirt does",
                    op.path,
                )
        st = self._stat(op, path)
        if (st.st_uid, st.st_gid) == (ouid, ogid):
            return Outcome.UNCHANGED
        outcome = self._chown(op, path, ouid, ogid)
        if outcome is Outcome.DONE:
            return Outcome.RESTORED if isinstance(recalled, str) else Outcome.DEFAULTED
        return outcome

    def _restore_acl(self, op: LabelOp, path: str, uid: int) -> Outcome:
        state = _read_acl_ref(path, uid)
        assert state is not None
        ref, prev, mask, this_boot = state
        if this_boot and ref > 1:
            _write_or_clear_ref(path, uid, (ref - 1, prev, mask))
            return Outcome.IN_USE
        try:
            acl, _ = host_acl.read_acl(path)
            acl = acl.with_named_user(uid, prev)
            named = any(e.tag in (host_acl.USER, host_acl.GROUP) for e in acl.entries)
            # The mask we replaced only comes back if named entries still need one (it
            # may have been there for another QEMU user's entry, now gone).
            acl = acl.with_mask(mask) if mask is not None and named else acl.with_mask()
            host_acl.write_acl(path, acl)
        except (OSError, ValueError) as exc:
            raise SecurityError(f"Unable to set ACLs on {op.path}: {exc}") from None
        _write_or_clear_ref(path, uid, None)
        return Outcome.REVOKED


def _perm(bits: int) -> str:
    return (
        ("r" if bits & host_acl.R else "-")
        + ("w" if bits & host_acl.W else "-")
        + ("x" if bits & host_acl.X else "-")
    )


def _canonical(ids: str) -> str | None:
    try:
        return format_ids(*parse_ids(ids))
    except SecurityError:
        return None


def _searchable_without_named(
    st: os.stat_result, acl: host_acl.Acl, uid: int, gids: frozenset[int]
) -> bool:
    """Can ``uid`` search the directory through its owner, owning group or other bits
    alone (what svirt never changes)?"""
    if uid == 0:
        return True
    if uid == st.st_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    group = acl.get(host_acl.GROUP_OBJ)
    if st.st_gid in gids and group is not None and group.perm & host_acl.X:
        mask = acl.get(host_acl.MASK)
        return mask is None or bool(mask.perm & host_acl.X)
    return bool(st.st_mode & stat.S_IXOTH)


def _widens_others(old: host_acl.Acl, new: host_acl.Acl, uid: int) -> bool:
    """True when the new mask lets any other group-class entry do more than before."""
    old_mask = old.get(host_acl.MASK)
    new_mask = new.get(host_acl.MASK)
    if old_mask is None or new_mask is None:
        return False  # without a mask before, group-class entries were not limited
    widened = new_mask.perm & ~old_mask.perm
    others = (
        e
        for e in old.entries
        if e.tag in (host_acl.GROUP_OBJ, host_acl.GROUP) or (e.tag == host_acl.USER and e.id != uid)
    )
    return any(e.perm & widened for e in others)


def _read_acl_ref(path: str, uid: int) -> tuple[int, int | None, int | None, bool] | None:
    """(refcount, replaced entry perm, replaced mask, from this boot) of svirt's ACL
    reference, or None. A value from an earlier boot has no live users, but still says
    what the entry replaced, so nothing is lost."""
    try:
        raw = os.getxattr(path, f"{ACL_XATTR_PREFIX}{uid}").decode()
    except OSError:
        return None
    ref = parse_acl_ref(raw)
    if ref is None:
        raise SecurityError(PREFIX_INTERNAL + f"malformed refcount {raw} on {path}")
    return ref.refcount, ref.prev, ref.mask, ref.this_boot


def _xattrs_supported(path: str) -> bool:
    try:
        os.getxattr(path, rem.xattr_names("dac")[1])
    except OSError as exc:
        return exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP)
    return True


def _has_acl_ref(path: str, uid: int) -> bool:
    try:
        os.getxattr(path, f"{ACL_XATTR_PREFIX}{uid}")
    except OSError:
        return False
    return True


def _write_or_clear_ref(
    path: str, uid: int, state: tuple[int, int | None, int | None] | None
) -> None:
    name = f"{ACL_XATTR_PREFIX}{uid}"
    if state is None or state[0] <= 0:
        try:
            os.removexattr(path, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
        return
    os.setxattr(path, name, format_acl_ref(*state).encode())
