"""``svirt list``: svirt's domains (after reconciling dead monitors) and libvirt's running
ones (its status XML), one :class:`DomainStatus` each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from svirt.conf import Config
from svirt.host import selinux as host_selinux
from svirt.launch.lifecycle import qemu_alive, reconcile
from svirt.policy.verify import find_live_domains
from svirt.security.manager import SecurityManager
from svirt.state.domains import DomainState

__all__ = ["DomainStatus", "domain_statuses"]


@dataclass(frozen=True, slots=True)
class DomainStatus:
    """One row of ``svirt list``. ``origin`` is ``"svirt"`` or ``"libvirt"``; ``state`` is
    the record's state (``running (QEMU gone)`` when its QEMU died unseen) or libvirt's
    followed by `` (libvirt)``; ``enforced`` is False where SELinux is off (the process
    label is recorded, not applied)."""

    name: str
    id: int | None
    state: str
    pid: int | None
    label: str | None
    imagelabel: str | None
    dac: str | None
    enforced: bool
    origin: str

    def to_dict(self) -> dict[str, Any]:
        """The ``svirt list --json`` entry."""
        return {
            "name": self.name,
            "id": self.id,
            "state": self.state,
            "pid": self.pid,
            "label": self.label,
            "imagelabel": self.imagelabel,
            "dac": self.dac,
            "enforced": self.enforced,
            "origin": self.origin,
        }


def domain_statuses(cfg: Config, *, libvirt: bool = True) -> list[DomainStatus]:
    """svirt's domains, then (``libvirt``) libvirt's running ones."""
    mgr = SecurityManager(cfg)
    reconcile(cfg, mgr)
    out = []
    for rec in mgr.store.records():
        sl = rec.domain.seclabel("selinux")
        dac = rec.domain.seclabel("dac")
        alive = qemu_alive(rec)
        state = str(rec.state)
        if rec.state is DomainState.RUNNING and not alive:
            state = "running (QEMU gone)"
        out.append(
            DomainStatus(
                name=rec.domain.name,
                id=rec.domain.id,
                state=state,
                pid=rec.pid if alive else None,  # a dead QEMU's pid may be reused
                label=sl.label if sl else None,
                imagelabel=sl.imagelabel if sl else None,
                dac=dac.label if dac else None,
                enforced=host_selinux.is_enabled(),
                origin="svirt",
            )
        )
    if not libvirt:
        return out
    # libvirt's running domains too (its status XML), marked as libvirt's.
    lv, _skipped = find_live_domains(cfg)
    for live in lv:
        if live.source != "libvirt":
            continue
        sl = live.domain.seclabel("selinux")
        dac = live.domain.seclabel("dac")
        out.append(
            DomainStatus(
                name=live.name,
                id=live.domain.id,
                state=f"{live.state or 'running'} (libvirt)",
                pid=live.pid,
                label=sl.label if sl else None,
                imagelabel=sl.imagelabel if sl else None,
                dac=dac.label if dac else None,
                enforced=host_selinux.is_enabled(),
                origin="libvirt",
            )
        )
    return out
