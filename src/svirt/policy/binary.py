"""A reader for the kernel binary policy (``policy.NN``), for what libsepol does not export.

libsepol answers access decisions (see :mod:`svirt.policy.oracle`), but its shared
library exports no way to ask which booleans guard a rule or which attributes a type
has. This module reads the binary format that ``policydb_read()`` reads (libsepol
``policydb.c``, ``avtab.c``, ``conditional.c``), keeping the symbols, the access
vector rules with their conditions and the type→attribute map, and skipping the rest
(role and filename transitions, object contexts, genfs, range transitions).

Only kernel policies for the SELinux target are accepted (versions 24–34; every
distribution since 2009 ships one of those). The reader is pure: it takes bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from svirt.errors import PolicyError

__all__ = [
    "BinaryPolicy",
    "CondNode",
    "Constraint",
    "PolicyBoolean",
    "read_binary_policy",
]

POLICYDB_MAGIC = 0xF97CFF8C
_TARGET = b"SE Linux"
_MIN_VERSION = 24  # POLICYDB_VERSION_BOUNDARY
_MAX_VERSION = 34  # POLICYDB_VERSION_COND_XPERMS

# Version thresholds (libsepol policydb.h).
_V_ROLETRANS = 26
_V_NEW_OBJECT_DEFAULTS = 27
_V_DEFAULT_TYPE = 28
_V_CONSTRAINT_NAMES = 29
_V_COMP_FTRANS = 33

# avtab key.specified bits.
AVTAB_ALLOWED = 0x0001
AVTAB_AUDITDENY = 0x0004
_AVTAB_XPERMS = 0x0700

# Constraint expressions (libsepol constraint.h).
_CEXPR_NOT, _CEXPR_AND, _CEXPR_OR, _CEXPR_ATTR, _CEXPR_NAMES = range(1, 6)
_CEXPR_USER, _CEXPR_ROLE, _CEXPR_TYPE, _CEXPR_TARGET, _CEXPR_XTARGET = 1, 2, 4, 8, 16
_CEXPR_LEVELS = {  # attr → (context, level) pairs compared: 0 source/target 1, low 0/high 1
    32: ((0, 0), (1, 0)),  # l1 l2
    64: ((0, 0), (1, 1)),  # l1 h2
    128: ((0, 1), (1, 0)),  # h1 l2
    256: ((0, 1), (1, 1)),  # h1 h2
    512: ((0, 0), (0, 1)),  # l1 h1
    1024: ((1, 0), (1, 1)),  # l2 h2
}
_OP_EQ, _OP_NEQ, _OP_DOM, _OP_DOMBY, _OP_INCOMP = range(1, 6)
_TYPE_PROPERTY_ATTRIBUTE = 0x0002

# Object-context kinds for the SELinux target, in file order.
_OCON_ISID, _OCON_FS, _OCON_PORT, _OCON_NETIF, _OCON_NODE, _OCON_FSUSE = range(6)
_OCON_NODE6, _OCON_IBPKEY, _OCON_IBENDPORT = 6, 7, 8

# Conditional expression operators (postfix).
COND_BOOL, COND_NOT, COND_OR, COND_AND, COND_XOR, COND_EQ, COND_NEQ = range(1, 8)


@dataclass(frozen=True, slots=True)
class PolicyBoolean:
    name: str
    value: int  # 1-based, as libsepol numbers them
    default: bool  # the state compiled into the policy


@dataclass(frozen=True, slots=True)
class CondNode:
    """A conditional block: a postfix boolean expression and the rules of each branch.

    Rules are ``(source, target, tclass, specified, perms)`` with 1-based type and
    class values, as in the binary avtab.
    """

    expression: tuple[tuple[int, int], ...]  # (operator, boolean value or 0)
    true_rules: tuple[tuple[int, int, int, int, int], ...]
    false_rules: tuple[tuple[int, int, int, int, int], ...]

    @property
    def booleans(self) -> frozenset[int]:
        return frozenset(b for op, b in self.expression if op == COND_BOOL)

    def evaluate(self, state: dict[int, bool]) -> bool:
        """The expression's value for boolean values ``state`` (missing → default)."""
        stack: list[bool] = []
        for op, b in self.expression:
            if op == COND_BOOL:
                stack.append(state[b])
            elif op == COND_NOT:
                stack.append(not stack.pop())
            else:
                right, left = stack.pop(), stack.pop()
                if op == COND_OR:
                    stack.append(left or right)
                elif op == COND_AND:
                    stack.append(left and right)
                elif op == COND_XOR:
                    stack.append(left != right)
                elif op == COND_EQ:
                    stack.append(left == right)
                else:
                    stack.append(left != right)
        return stack[-1]


@dataclass(frozen=True, slots=True)
class Constraint:
    """A ``constrain``/``mlsconstrain`` rule: the permissions it covers and its postfix
    expression ``(expr_type, attr, op, names)`` (names: 0-based values, types expanded)."""

    permissions: int
    expression: tuple[tuple[int, int, int, frozenset[int]], ...]


_Level = tuple[int, frozenset[int]]  # sensitivity value, category values


@dataclass(frozen=True, slots=True)
class _Context:
    user: int
    role: int
    type: int
    levels: tuple[_Level, _Level] | None  # low, high


def _dominates(a: _Level, b: _Level) -> bool:
    return a[0] >= b[0] and a[1] >= b[1]


@dataclass(slots=True)
class BinaryPolicy:
    """What the oracle needs from a kernel policy, by name and by value."""

    version: int
    mls: bool
    classes: dict[str, int] = field(default_factory=dict)
    class_perms: dict[int, dict[str, int]] = field(default_factory=dict)  # name → bit
    types: dict[str, int] = field(default_factory=dict)  # aliases included
    attributes: frozenset[int] = frozenset()
    booleans: tuple[PolicyBoolean, ...] = ()
    cond_nodes: tuple[CondNode, ...] = ()
    # type value - 1 → the attribute values (1-based) it has, itself included
    type_attrs: tuple[frozenset[int], ...] = ()
    _allowed: dict[tuple[int, int, int], int] = field(default_factory=dict, repr=False)
    constraints: dict[int, tuple[Constraint, ...]] = field(default_factory=dict, repr=False)
    users: dict[str, int] = field(default_factory=dict)
    roles: dict[str, int] = field(default_factory=dict)
    role_dominates: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)
    role_allow: frozenset[tuple[int, int]] = frozenset()
    type_bounds: dict[int, int] = field(default_factory=dict, repr=False)
    sensitivities: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)

    def type_value(self, name: str) -> int | None:
        return self.types.get(name)

    def class_value(self, name: str) -> int | None:
        return self.classes.get(name)

    def perm_bits(self, tclass: int, perms: Iterable[str]) -> int | None:
        """The access vector for permission names; None if one is not in the class."""
        table = self.class_perms.get(tclass, {})
        av = 0
        for p in perms:
            bit = table.get(p)
            if bit is None:
                return None
            av |= bit
        return av

    def _attrs(self, type_value: int) -> frozenset[int]:
        if 0 < type_value <= len(self.type_attrs):
            return self.type_attrs[type_value - 1]
        return frozenset((type_value,))

    def _matching(
        self, rules: Iterable[tuple[int, int, int, int, int]], stype: int, ttype: int, tclass: int
    ) -> int:
        """The perms that allow rules among ``rules`` grant to (stype, ttype, tclass)."""
        sattrs, tattrs = self._attrs(stype), self._attrs(ttype)
        granted = 0
        for src, tgt, cls, spec, perms in rules:
            if cls == tclass and spec & AVTAB_ALLOWED and src in sattrs and tgt in tattrs:
                granted |= perms
        return granted

    def unconditional_allowed(self, stype: int, ttype: int, tclass: int) -> int:
        """The perms allowed by rules outside any conditional block."""
        granted = 0
        for s in self._attrs(stype):
            for t in self._attrs(ttype):
                granted |= self._allowed.get((s, t, tclass), 0)
        return granted

    def boolean_candidates(self, stype: int, ttype: int, tclass: int, av: int) -> tuple[str, ...]:
        """Booleans whose conditional blocks hold an allow rule granting any of ``av``
        to (stype, ttype, tclass), in boolean value order.

        Flipping any other boolean cannot add one of these permissions, so this is a
        superset of the booleans that audit2why reports for a TE denial.
        """
        wanted: set[int] = set()
        for node in self.cond_nodes:
            if self._matching(node.true_rules, stype, ttype, tclass) & av or (
                self._matching(node.false_rules, stype, ttype, tclass) & av
            ):
                wanted |= node.booleans
        return tuple(b.name for b in self.booleans if b.value in wanted)

    def granting_booleans(
        self, stype: int, ttype: int, tclass: int, av: int
    ) -> tuple[tuple[str, bool], ...]:
        """Booleans (with their current values) of the enabled conditional branches that
        grant permissions of ``av`` which unconditional rules do not."""
        missing = av & ~self.unconditional_allowed(stype, ttype, tclass)
        if not missing:
            return ()
        state = {b.value: b.default for b in self.booleans}
        found: set[int] = set()
        for node in self.cond_nodes:
            branch = node.true_rules if node.evaluate(state) else node.false_rules
            if self._matching(branch, stype, ttype, tclass) & missing:
                found |= node.booleans
        return tuple((b.name, b.default) for b in self.booleans if b.value in found)

    def _parse_level(self, text: str) -> _Level | None:
        sens_name, _, cats_text = text.partition(":")
        sens = self.sensitivities.get(sens_name)
        if sens is None:
            return None
        cats: set[int] = set()
        for item in cats_text.split(",") if cats_text else ():
            first, dot, last = item.partition(".")
            lo = self.categories.get(first)
            hi = self.categories.get(last) if dot else lo
            if lo is None or hi is None or hi < lo:
                return None
            cats.update(range(lo, hi + 1))
        return sens, frozenset(cats)

    def _parse_context(self, text: str) -> _Context | None:
        parts = text.split(":", 3)
        if len(parts) < 3:
            return None
        user, role, type_ = (
            self.users.get(parts[0]),
            self.roles.get(parts[1]),
            self.types.get(parts[2]),
        )
        if user is None or role is None or type_ is None:
            return None
        if len(parts) == 3:
            return _Context(user, role, type_, None)
        low_text, dash, high_text = parts[3].partition("-")
        low = self._parse_level(low_text)
        high = self._parse_level(high_text) if dash else low
        if low is None or high is None:
            return None
        return _Context(user, role, type_, (low, high))

    def _evaluate(self, c: Constraint, s: _Context, t: _Context) -> bool | None:
        stack: list[bool] = []
        for expr_type, attr, op, names in c.expression:
            if expr_type == _CEXPR_NOT:
                stack.append(not stack.pop())
            elif expr_type in (_CEXPR_AND, _CEXPR_OR):
                right, left = stack.pop(), stack.pop()
                stack.append(left and right if expr_type == _CEXPR_AND else left or right)
            elif expr_type == _CEXPR_NAMES:
                if attr & _CEXPR_XTARGET:
                    return None  # validatetrans only
                ctx = t if attr & _CEXPR_TARGET else s
                if attr & _CEXPR_USER:
                    value = ctx.user
                elif attr & _CEXPR_ROLE:
                    value = ctx.role
                elif attr & _CEXPR_TYPE:
                    value = ctx.type
                else:
                    return None
                member = (value - 1) in names
                stack.append(member if op == _OP_EQ else not member)
            elif attr in _CEXPR_LEVELS:
                if s.levels is None or t.levels is None:
                    return None
                pair = (s.levels, t.levels)
                (c1, i1), (c2, i2) = _CEXPR_LEVELS[attr]
                l1, l2 = pair[c1][i1], pair[c2][i2]
                if op == _OP_EQ:
                    stack.append(l1 == l2)
                elif op == _OP_NEQ:
                    stack.append(l1 != l2)
                elif op == _OP_DOM:
                    stack.append(_dominates(l1, l2))
                elif op == _OP_DOMBY:
                    stack.append(_dominates(l2, l1))
                else:
                    stack.append(not _dominates(l1, l2) and not _dominates(l2, l1))
            elif attr == _CEXPR_ROLE and op in (_OP_DOM, _OP_DOMBY, _OP_INCOMP):
                d1 = self.role_dominates.get(s.role, frozenset())
                d2 = self.role_dominates.get(t.role, frozenset())
                if op == _OP_DOM:
                    stack.append((t.role - 1) in d1)
                elif op == _OP_DOMBY:
                    stack.append((s.role - 1) in d2)
                else:
                    stack.append((t.role - 1) not in d1 and (s.role - 1) not in d2)
            elif attr in (_CEXPR_USER, _CEXPR_ROLE, _CEXPR_TYPE):
                field_ = {_CEXPR_USER: "user", _CEXPR_ROLE: "role", _CEXPR_TYPE: "type"}[attr]
                equal = getattr(s, field_) == getattr(t, field_)
                stack.append(equal if op == _OP_EQ else not equal)
            else:
                return None
        return stack[-1] if stack else None

    def passes_after_te(self, scon: str, tcon: str, tclass: int, av: int) -> bool | None:
        """Would ``av`` survive the constraint, RBAC and bounds steps of libsepol's
        computation once type enforcement allows all of it? None when this reader
        cannot say (unknown names, a bounded source type, an unusual expression)."""
        s, t = self._parse_context(scon), self._parse_context(tcon)
        if s is None or t is None or self.type_bounds.get(s.type):
            return None
        for c in self.constraints.get(tclass, ()):
            if c.permissions & av:
                ok = self._evaluate(c, s, t)
                if ok is None:
                    return None
                if not ok:
                    return False
        process = self.classes.get("process")
        if tclass == process and process is not None and s.role != t.role:
            trans = self.perm_bits(process, ["transition"]) or 0
            dyn = self.class_perms.get(process, {}).get("dyntransition", 0)
            if av & (trans | dyn) and (s.role, t.role) not in self.role_allow:
                return False
        return True


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u32s(self, n: int) -> tuple[int, ...]:
        end = self.pos + 4 * n
        if end > len(self.data):
            raise PolicyError("truncated binary policy")
        out = struct.unpack_from(f"<{n}I", self.data, self.pos)
        self.pos = end
        return out

    def u32(self) -> int:
        end = self.pos + 4
        if end > len(self.data):
            raise PolicyError("truncated binary policy")
        (v,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos = end
        return int(v)

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise PolicyError("truncated binary policy")
        self.pos += n

    def string(self, n: int) -> str:
        end = self.pos + n
        if end > len(self.data):
            raise PolicyError("truncated binary policy")
        s = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end
        return s

    def ebitmap(self) -> frozenset[int]:
        """An ebitmap as the set of its 0-based set bits."""
        _mapsize, _highbit, count = self.u32s(3)
        bits: set[int] = set()
        for _ in range(count):
            end = self.pos + 12
            if end > len(self.data):
                raise PolicyError("truncated binary policy")
            start, word = struct.unpack_from("<IQ", self.data, self.pos)
            self.pos = end
            while word:
                low = word & -word
                bits.add(start + low.bit_length() - 1)
                word ^= low
        return frozenset(bits)

    def skip_ebitmap(self) -> None:
        _mapsize, _highbit, count = self.u32s(3)
        self.skip(12 * count)

    def skip_mls_range(self) -> None:
        items = self.u32()
        if items > 2:
            raise PolicyError("invalid MLS range in binary policy")
        self.skip(4 * items)
        self.skip_ebitmap()
        if items > 1:
            self.skip_ebitmap()

    def skip_context(self) -> None:
        self.skip(12)
        self.skip_mls_range()

    def avtab_item(self) -> tuple[int, int, int, int, int]:
        end = self.pos + 8
        if end > len(self.data):
            raise PolicyError("truncated binary policy")
        src, tgt, cls, spec = struct.unpack_from("<4H", self.data, self.pos)
        self.pos = end
        if spec & _AVTAB_XPERMS:
            self.skip(2 + 32)  # specified, driver, 8 × u32 perms
            return (src, tgt, cls, spec, 0)
        return (src, tgt, cls, spec, self.u32())


def _read_constraints(r: _Reader, ncons: int, version: int) -> tuple[Constraint, ...]:
    out = []
    for _ in range(ncons):
        permissions, nexpr = r.u32s(2)
        expression = []
        for _ in range(nexpr):
            expr_type, attr, op = r.u32s(3)
            names: frozenset[int] = frozenset()
            if expr_type == _CEXPR_NAMES:
                names = r.ebitmap()
                if version >= _V_CONSTRAINT_NAMES:
                    r.skip_ebitmap()  # the type set as written in the source
                    r.skip_ebitmap()
                    r.skip(4)
            expression.append((expr_type, attr, op, names))
        out.append(Constraint(permissions, tuple(expression)))
    return tuple(out)


def _read_perms(r: _Reader, nel: int) -> dict[str, int]:
    perms: dict[str, int] = {}
    for _ in range(nel):
        length, value = r.u32s(2)
        perms[r.string(length)] = 1 << (value - 1)
    return perms


def read_binary_policy(data: bytes) -> BinaryPolicy:
    """Read a kernel binary policy. Raises PolicyError when it is not one this reader
    understands (wrong magic, target or version, or truncated)."""
    r = _Reader(data)
    magic, length = r.u32s(2)
    if magic != POLICYDB_MAGIC:
        raise PolicyError("not a binary SELinux policy (bad magic number)")
    if length != len(_TARGET) or data[8 : 8 + length] != _TARGET:
        raise PolicyError("not a binary policy for the SELinux target")
    r.skip(length)
    version, config, sym_num, ocon_num = r.u32s(4)
    if not _MIN_VERSION <= version <= _MAX_VERSION:
        raise PolicyError(
            f"unsupported binary policy version {version} "
            f"(supported: {_MIN_VERSION}–{_MAX_VERSION})"
        )
    if sym_num != 8:
        raise PolicyError(f"unexpected symbol table count {sym_num} in binary policy")
    pol = BinaryPolicy(version=version, mls=bool(config & 1))
    r.skip_ebitmap()  # policy capabilities
    r.skip_ebitmap()  # permissive types

    commons: dict[str, dict[str, int]] = {}
    attributes: set[int] = set()
    booleans: list[PolicyBoolean] = []
    ntypes = 0
    for sym in range(8):
        nprim, nel = r.u32s(2)
        if sym == 3:
            ntypes = nprim
        for _ in range(nel):
            if sym == 0:  # commons
                length, _value, _nprim, nperms = r.u32s(4)
                name = r.string(length)
                commons[name] = _read_perms(r, nperms)
            elif sym == 1:  # classes
                length, length2, value, _nprim, nperms, ncons = r.u32s(6)
                name = r.string(length)
                perms: dict[str, int] = {}
                if length2:
                    perms.update(commons.get(r.string(length2), {}))
                perms.update(_read_perms(r, nperms))
                pol.constraints[value] = _read_constraints(r, ncons, version)
                _read_constraints(r, r.u32(), version)  # validatetrans
                if version >= _V_NEW_OBJECT_DEFAULTS:
                    r.skip(12)
                if version >= _V_DEFAULT_TYPE:
                    r.skip(4)
                pol.classes[name] = value
                pol.class_perms[value] = perms
            elif sym == 2:  # roles
                length, value, _bounds = r.u32s(3)
                pol.roles[r.string(length)] = value
                pol.role_dominates[value] = r.ebitmap()
                r.skip_ebitmap()  # types
            elif sym == 3:  # types
                length, value, properties, bounds = r.u32s(4)
                name = r.string(length)
                pol.types[name] = value
                if bounds:
                    pol.type_bounds[value] = bounds
                if properties & _TYPE_PROPERTY_ATTRIBUTE:
                    attributes.add(value)
            elif sym == 4:  # users
                length, value, _bounds = r.u32s(3)
                pol.users[r.string(length)] = value
                r.skip_ebitmap()  # roles
                r.skip_mls_range()
                r.skip(4)  # default level: sensitivity
                r.skip_ebitmap()  # default level: categories
            elif sym == 5:  # booleans
                value, state, length = r.u32s(3)
                booleans.append(PolicyBoolean(r.string(length), value, bool(state)))
            elif sym == 6:  # sensitivities
                length, _isalias = r.u32s(2)
                name = r.string(length)
                pol.sensitivities[name] = r.u32()
                r.skip_ebitmap()
            else:  # categories
                length, value, _isalias = r.u32s(3)
                pol.categories[r.string(length)] = value
    pol.attributes = frozenset(attributes)
    pol.booleans = tuple(sorted(booleans, key=lambda b: b.value))

    for _ in range(r.u32()):  # unconditional avtab
        src, tgt, cls, spec, granted = r.avtab_item()
        if spec & AVTAB_ALLOWED:
            key = (src, tgt, cls)
            pol._allowed[key] = pol._allowed.get(key, 0) | granted

    nodes: list[CondNode] = []
    for _ in range(r.u32()):
        r.skip(4)  # cur_state: recomputed from the booleans
        nexpr = r.u32()
        expression = tuple((op, b) for op, b in (r.u32s(2) for _ in range(nexpr)))
        true_rules = tuple(r.avtab_item() for _ in range(r.u32()))
        false_rules = tuple(r.avtab_item() for _ in range(r.u32()))
        nodes.append(CondNode(expression, true_rules, false_rules))
    pol.cond_nodes = tuple(nodes)

    r.skip((4 if version >= _V_ROLETRANS else 3) * 4 * r.u32())  # role transitions
    pol.role_allow = frozenset((a, b) for a, b in (r.u32s(2) for _ in range(r.u32())))
    for _ in range(r.u32()):  # filename transitions
        r.skip(r.u32())
        if version >= _V_COMP_FTRANS:
            _ttype, _tclass, ndatum = r.u32s(3)
            for _ in range(ndatum):
                r.skip_ebitmap()
                r.skip(4)
        else:
            r.skip(16)
    _skip_ocontexts(r, ocon_num)
    for _ in range(r.u32()):  # genfs
        r.skip(r.u32())
        for _ in range(r.u32()):
            r.skip(r.u32())
            r.skip(4)
            r.skip_context()
    for _ in range(r.u32()):  # range transitions
        r.skip(12)
        r.skip_mls_range()
    type_attrs = []
    for i in range(ntypes):
        # Bits are 0-based type values; the type itself is the degenerate attribute.
        type_attrs.append(frozenset(b + 1 for b in r.ebitmap()) | {i + 1})
    pol.type_attrs = tuple(type_attrs)
    if r.pos != len(data):
        raise PolicyError(
            f"binary policy has {len(data) - r.pos} unexpected trailing bytes "
            "(format not understood)"
        )
    return pol


def _skip_ocontexts(r: _Reader, ocon_num: int) -> None:
    for kind in range(ocon_num):
        for _ in range(r.u32()):
            if kind == _OCON_ISID:
                r.skip(4)
                r.skip_context()
            elif kind in (_OCON_FS, _OCON_NETIF):
                r.skip(r.u32())
                r.skip_context()
                r.skip_context()
            elif kind == _OCON_PORT:
                r.skip(12)
                r.skip_context()
            elif kind == _OCON_NODE:
                r.skip(8)
                r.skip_context()
            elif kind == _OCON_FSUSE:
                _behavior, length = r.u32s(2)
                r.skip(length)
                r.skip_context()
            elif kind == _OCON_NODE6:
                r.skip(32)
                r.skip_context()
            elif kind == _OCON_IBPKEY:
                r.skip(16)
                r.skip_context()
            elif kind == _OCON_IBENDPORT:
                length, _port = r.u32s(2)
                r.skip(length)
                r.skip_context()
            else:
                raise PolicyError(f"unknown object context kind {kind} in binary policy")
