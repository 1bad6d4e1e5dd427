"""The ``none`` driver: no labels, no operations, so nothing special-cases "no security"."""

from __future__ import annotations

from collections.abc import Sequence

from svirt.domain.model import Domain, Seclabel
from svirt.domain.resources import Resource
from svirt.security.driver import Action, LabelOp, Left, Outcome, Preview

__all__ = ["NopDriver"]


class NopDriver:
    name = "none"

    def gen_label(self, domain: Domain, seclabel: Seclabel) -> Seclabel:
        return seclabel

    def adopt_label(self, domain: Domain, seclabel: Seclabel) -> Seclabel:
        return seclabel

    def reserve_label(self, domain: Domain, seclabel: Seclabel, pid: int | None) -> None:
        return None

    def release_label(self, domain: Domain, seclabel: Seclabel) -> Seclabel:
        return seclabel

    def set_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        return []

    def restore_ops(self, domain: Domain, resources: Sequence[Resource]) -> list[LabelOp]:
        return []

    def apply(self, op: LabelOp, target: str | None = None) -> Outcome:
        return Outcome.SKIPPED

    def current(self, path: str) -> str | None:
        return None

    def left(self, domain: Domain, resources: Sequence[Resource], action: Action) -> list[Left]:
        return []

    def preview(self, op: LabelOp) -> Preview:
        return Preview(Outcome.SKIPPED, "nothing (no security driver)", None)
