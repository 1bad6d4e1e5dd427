"""The policy oracle: access decisions, with their reason, from the real binary policy.

The kernel here has SELinux off, so nothing can be observed being denied; the binary
policy can be asked instead, including the MCS constraints. ``decide(scon, tcon,
tclass, perms)`` answers what the kernel would: allowed, or denied with audit2why's
reason (no allow rule, a boolean that would allow it, a constraint and its text, a
dontaudit rule, RBAC, bounds, or a context/class/permission the policy does not know).

Two backends give the same answers (see :mod:`svirt.policy._backends`):
``selinux.audit2why`` when importable, libsepol through ctypes otherwise. Each keeps one
policy per process; oracles on different policies take turns, reloading on a switch,
so alternating between two policies is correct but slow: keep one oracle per policy
and batch its questions. Decisions are cached per oracle.

For callers that think in file accesses, :class:`Access` and :meth:`PolicyOracle.can_read`
/ :meth:`PolicyOracle.can_read_write` map "read" and "read-write" to the permissions
QEMU needs on a file, device node or socket (:func:`tclass_for_mode`).
"""

from __future__ import annotations

import enum
import logging
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svirt.errors import PolicyError
from svirt.host import selinux as host_selinux
from svirt.policy import _backends
from svirt.policy._backends import Backend, PolicyImage
from svirt.policy.binary import BinaryPolicy

__all__ = [
    "BACKENDS",
    "READ_PERMS",
    "READ_WRITE_PERMS",
    "Access",
    "CacheInfo",
    "Decision",
    "PolicyOracle",
    "Reason",
    "available_backends",
    "changed_booleans",
    "default_policy_path",
    "oracle_with_booleans",
    "policy_with_booleans",
    "tclass_for_mode",
    "with_active_booleans",
]

log = logging.getLogger(__name__)

BACKENDS = ("audit2why", "libsepol")  # in order of preference
DEFAULT_CACHE_SIZE = 1 << 16
_MAX_VALID_TOKENS = 1 << 16

# What QEMU does to a resource it reads / reads and writes (common `file` permissions,
# shared by file, blk_file, chr_file, sock_file and fifo_file).
READ_PERMS: tuple[str, ...] = ("read", "open", "getattr")
READ_WRITE_PERMS: tuple[str, ...] = (*READ_PERMS, "write", "append", "lock", "ioctl")
_DIR_READ_EXTRA = ("search",)
_DIR_WRITE_EXTRA = ("add_name", "remove_name")


class Reason(enum.Enum):
    """audit2why's answer codes (the values are audit2why's)."""

    ALLOW = 0
    DONTAUDIT = 1
    TERULE = 2
    BOOLEAN = 3
    CONSTRAINT = 4
    RBAC = 5
    BOUNDS = 6
    BADSCON = -2
    BADTCON = -3
    BADTCLASS = -4
    BADPERM = -5

    @property
    def is_bad_input(self) -> bool:
        return self.value < 0


_REASON_TEXT = {
    Reason.ALLOW: "allowed",
    Reason.DONTAUDIT: "denied silently: no allow rule, and a dontaudit rule hides the denial",
    Reason.TERULE: "denied: no allow rule for this type pair and permission",
    Reason.BOOLEAN: "denied: allowed only when a boolean is changed",
    Reason.CONSTRAINT: "denied: a constraint (MLS/MCS categories) forbids it",
    Reason.RBAC: "denied: the role is not allowed this type",
    Reason.BOUNDS: "denied: the type exceeds its bounding type",
    Reason.BADSCON: "invalid source context for this policy",
    Reason.BADTCON: "invalid target context for this policy",
    Reason.BADTCLASS: "unknown object class in this policy",
    Reason.BADPERM: "unknown permission for this class in this policy",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """One access decision. ``allowed`` is True only for :attr:`Reason.ALLOW`.

    ``booleans``: for BOOLEAN, each boolean that alone would allow the access, with the
    value it would need. ``constraint``: for CONSTRAINT, libsepol's text of the failing
    constraint (``-Fail-`` marks the failing terms).
    """

    reason: Reason
    allowed: bool
    booleans: tuple[tuple[str, bool], ...] = ()
    constraint: str | None = None

    def describe(self) -> str:
        """One line: the outcome and what would change it."""
        text = _REASON_TEXT[self.reason]
        if self.reason is Reason.BOOLEAN and self.booleans:
            fixes = " or ".join(
                f"setsebool -P {name} {'on' if value else 'off'}" for name, value in self.booleans
            )
            text += f" ({fixes})"
        if self.reason is Reason.CONSTRAINT and self.constraint:
            text += f": {self.constraint}"
        return text


class Access(enum.Enum):
    """What a process does to a resource, as QEMU uses it."""

    READ = "read"
    READ_WRITE = "read-write"

    def perms(self, tclass: str = "file") -> tuple[str, ...]:
        base = READ_PERMS if self is Access.READ else READ_WRITE_PERMS
        if tclass == "dir":
            extra = _DIR_READ_EXTRA if self is Access.READ else _DIR_READ_EXTRA + _DIR_WRITE_EXTRA
            return base + extra
        return base


def tclass_for_mode(mode: int) -> str:
    """The object class of an inode from its ``st_mode``."""
    if stat.S_ISBLK(mode):
        return "blk_file"
    if stat.S_ISCHR(mode):
        return "chr_file"
    if stat.S_ISSOCK(mode):
        return "sock_file"
    if stat.S_ISFIFO(mode):
        return "fifo_file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "lnk_file"
    return "file"


@dataclass(frozen=True, slots=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    maxsize: int


_POLICY_FILE = re.compile(r"policy\.(\d+)\Z")


def default_policy_path(selinux_dir: Path = Path("/etc/selinux")) -> Path | None:
    """The installed binary policy, as libselinux finds it: ``SELINUXTYPE`` from
    ``<selinux_dir>/config`` (default ``targeted``), then the highest ``policy.N`` in
    ``<selinux_dir>/<type>/policy/``. None when there is none."""
    policy_type = "targeted"
    try:
        for line in (selinux_dir / "config").read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() == "SELINUXTYPE" and value.strip():
                policy_type = value.strip()
    except OSError:
        pass
    directory = selinux_dir / policy_type / "policy"
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return None
    versions = [int(m.group(1)) for n in names if (m := _POLICY_FILE.match(n))]
    if not versions:
        return None
    return directory / f"policy.{max(versions)}"


def policy_with_booleans(policy_path: Path, booleans: Mapping[str, bool]) -> bytes:
    """The binary policy at ``policy_path`` with boolean defaults changed, as
    ``setsebool -P`` would rebuild it; write it to a file to ask "what if" questions
    with another oracle. Needs the libsepol backend."""
    backend = _backends.get_backend("libsepol")
    if not isinstance(backend, _backends.LibsepolBackend):
        raise PolicyError("changing booleans needs libsepol.so, which cannot be loaded")
    image = PolicyImage.read(Path(policy_path))
    with _backends.LOCK:
        return backend.image_with_booleans(image, booleans)


def changed_booleans(oracle: PolicyOracle, active: Mapping[str, bool]) -> dict[str, bool]:
    """The booleans whose value in ``active`` differs from the policy's default."""
    return {
        b.name: active[b.name]
        for b in oracle.binary().booleans
        if b.name in active and active[b.name] != b.default
    }


def oracle_with_booleans(oracle: PolicyOracle, values: Mapping[str, bool]) -> PolicyOracle:
    """An oracle for ``oracle``'s policy with boolean values changed (reported under the
    same path)."""
    data = policy_with_booleans(oracle.path, values)
    with tempfile.NamedTemporaryFile(prefix="svirt-policy-", suffix=oracle.path.suffix) as fh:
        fh.write(data)
        fh.flush()
        variant = PolicyOracle(Path(fh.name), backend=oracle.backend)
    variant.path = oracle.path
    return variant


def with_active_booleans(oracle: PolicyOracle) -> PolicyOracle:
    """``oracle``, or where the running kernel's booleans differ from the policy's
    defaults (``setsebool`` without ``-P``), an oracle with the kernel's values: the
    kernel decides with those (found in the lab)."""
    changed = changed_booleans(oracle, host_selinux.active_booleans())
    return oracle_with_booleans(oracle, changed) if changed else oracle


def available_backends() -> tuple[str, ...]:
    """The backends that load on this Python, in order of preference."""
    return tuple(name for name in BACKENDS if _backends.get_backend(name) is not None)


def _usable(text: str) -> bool:
    # The bindings take C strings: a NUL would truncate, a lone surrogate cannot encode.
    if "\0" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class PolicyOracle:
    """Access decisions from one binary policy.

    ``policy_path`` None means the installed policy (:func:`default_policy_path`).
    ``backend`` None picks ``audit2why`` when importable, else ``libsepol``.
    ``cache_size`` 0 turns the decision cache off.
    """

    def __init__(
        self,
        policy_path: Path | None = None,
        *,
        backend: str | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if policy_path is None:
            policy_path = default_policy_path()
            if policy_path is None:
                raise PolicyError(
                    "no binary SELinux policy installed under /etc/selinux "
                    "(install selinux-policy-default, or give a policy path)"
                )
        self.path = Path(policy_path)
        self._backend = self._pick_backend(backend)
        self._image = PolicyImage.read(self.path)
        self._cache: dict[tuple[str, str, str, tuple[str, ...]], Decision] = {}
        self._cache_size = max(0, cache_size)
        self._hits = 0
        self._misses = 0
        # Inputs libsepol has accepted: queries made only of these cannot make it print.
        self._valid: set[tuple[str, str]] = set()
        # Fail now, not at the first question, if the backend refuses the policy.
        with _backends.LOCK:
            self._backend.load(self._image)

    @staticmethod
    def _pick_backend(name: str | None) -> Backend:
        if name is not None:
            found = _backends.get_backend(name)
            if found is None:
                hint = (
                    "selinux.audit2why cannot be imported (Debian's python3-selinux, "
                    "for /usr/bin/python3)"
                    if name == "audit2why"
                    else "libsepol.so cannot be loaded"
                )
                raise PolicyError(f"policy backend {name} is not available: {hint}")
            return found
        for candidate in BACKENDS:
            found = _backends.get_backend(candidate)
            if found is not None:
                return found
        raise PolicyError(
            "no policy backend available: neither selinux.audit2why nor libsepol.so loads"
        )

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def digest(self) -> str:
        """SHA-256 of the policy bytes this oracle answers for."""
        return self._image.digest

    def binary(self) -> BinaryPolicy:
        """The parsed policy (symbols, conditional rules); read on first use."""
        return self._image.binary()

    def decide(self, scon: str, tcon: str, tclass: str, perms: Sequence[str]) -> Decision:
        """May a process labelled ``scon`` do ``perms`` on a ``tclass`` object labelled
        ``tcon``? Never raises for bad input: the reason says what was wrong. An empty
        ``perms`` is BADPERM (there is nothing to decide)."""
        if isinstance(perms, str):
            perms = (perms,)
        key = (scon, tcon, tclass, tuple(perms))
        found = self._cache.get(key)
        if found is not None:
            self._hits += 1
            return found
        self._misses += 1
        decision = self._decide(scon, tcon, tclass, key[3])
        if self._cache_size:
            with _backends.LOCK:  # eviction iterates the dict: not while another inserts
                if len(self._cache) >= self._cache_size:
                    del self._cache[next(iter(self._cache))]
                self._cache[key] = decision
        return decision

    def _decide(self, scon: str, tcon: str, tclass: str, perms: tuple[str, ...]) -> Decision:
        if not _usable(scon):
            return _BAD[Reason.BADSCON]
        if not _usable(tcon):
            return _BAD[Reason.BADTCON]
        if not _usable(tclass):
            return _BAD[Reason.BADTCLASS]
        if not perms or not all(_usable(p) for p in perms):
            return _BAD[Reason.BADPERM]
        tokens = [("context", scon), ("context", tcon), ("class", tclass)]
        tokens.extend(("perm", f"{tclass}:{p}") for p in perms)
        quiet = not all(t in self._valid for t in tokens)
        with _backends.LOCK:
            code, data = self._backend.analyze(self._image, scon, tcon, tclass, perms, quiet=quiet)
        decision = self._to_decision(code, data, scon, tcon, tclass, perms)
        if quiet:
            known = {
                Reason.BADSCON: 0,
                Reason.BADTCON: 1,
                Reason.BADTCLASS: 2,
                Reason.BADPERM: 3,
            }.get(decision.reason, len(tokens))
            if len(self._valid) > _MAX_VALID_TOKENS:
                self._valid.clear()
            self._valid.update(tokens[:known])
        return decision

    def _to_decision(
        self, code: int, data: Any, scon: str, tcon: str, tclass: str, perms: tuple[str, ...]
    ) -> Decision:
        try:
            reason = Reason(code)
        except ValueError:
            raise PolicyError(
                f"libsepol could not compute {scon} -> {tcon} {tclass} "
                f"{{ {' '.join(perms)} }} with policy {self.path} (code {code})"
            ) from None
        if reason is Reason.ALLOW:
            return _ALLOWED
        if reason.is_bad_input:
            return _BAD[reason]
        if reason is Reason.BOOLEAN:
            booleans = tuple((str(name), bool(value)) for name, value in data or ())
            return Decision(reason, False, booleans=booleans)
        if reason is Reason.CONSTRAINT:
            text = str(data).strip() if data else None
            return Decision(reason, False, constraint=text)
        return Decision(reason, False)

    def can_access(self, scon: str, tcon: str, tclass: str, perms: Sequence[str]) -> bool:
        return self.decide(scon, tcon, tclass, perms).allowed

    def file_access(self, scon: str, tcon: str, access: Access, tclass: str = "file") -> Decision:
        """The decision for reading, or reading and writing, an object of ``tclass``."""
        return self.decide(scon, tcon, tclass, access.perms(tclass))

    def can_read(self, scon: str, tcon: str, tclass: str = "file") -> bool:
        return self.file_access(scon, tcon, Access.READ, tclass).allowed

    def can_read_write(self, scon: str, tcon: str, tclass: str = "file") -> bool:
        return self.file_access(scon, tcon, Access.READ_WRITE, tclass).allowed

    def granting_booleans(
        self, scon: str, tcon: str, tclass: str, perms: Sequence[str]
    ) -> tuple[tuple[str, bool], ...]:
        """For an allowed access: the booleans, with their current (default) values,
        whose conditional rules grant part of it; () when plain rules grant it all or
        the names are not in the policy."""
        binary = self.binary()
        parts_s, parts_t = scon.split(":"), tcon.split(":")
        if len(parts_s) < 3 or len(parts_t) < 3:
            return ()
        stype, ttype = binary.type_value(parts_s[2]), binary.type_value(parts_t[2])
        cls = binary.class_value(tclass)
        if stype is None or ttype is None or cls is None:
            return ()
        av = binary.perm_bits(cls, [perms] if isinstance(perms, str) else perms)
        if not av:
            return ()
        return binary.granting_booleans(stype, ttype, cls, av)

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._misses, len(self._cache), self._cache_size)

    def cache_clear(self) -> None:
        self._cache.clear()
        self._hits = self._misses = 0

    def __repr__(self) -> str:
        return f"PolicyOracle({str(self.path)!r}, backend={self.backend!r})"


_ALLOWED = Decision(Reason.ALLOW, True)
_BAD = {r: Decision(r, False) for r in Reason if r.is_bad_input}
