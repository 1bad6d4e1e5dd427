"""The two ways of asking libsepol for an access decision.

* ``audit2why``: Debian's ``selinux.audit2why`` C extension (python3-selinux), with
  libsepol linked in statically. Only importable from the Python it was built for.
* ``libsepol``: the shared ``libsepol.so.2`` through ctypes, from any Python. libsepol
  does not export its boolean functions for the loaded policy, so the booleans that
  would allow a TE denial are found the way audit2why finds them (flip one, recompute)
  on a private copy of the policy, limited to the booleans whose conditional rules can
  grant the permission (:meth:`BinaryPolicy.boolean_candidates`).

Both keep ONE loaded policy per process in C globals (separate ones: audit2why has its
own static copy of libsepol). ``load()`` and ``analyze()`` switch the backend to the
requested policy when another one is loaded; callers hold :data:`LOCK` around them.
Both return audit2why's ``(code, data)`` tuples.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from svirt.errors import PolicyError
from svirt.policy.binary import POLICYDB_MAGIC, BinaryPolicy, read_binary_policy

log = logging.getLogger(__name__)

# audit2why's result codes.
ALLOW, DONTAUDIT, TERULE, BOOLEAN, CONSTRAINT, RBAC, BOUNDS = range(7)
BADSCON, BADTCON, BADTCLASS, BADPERM, BADCOMPUTE, NOPOLICY = -2, -3, -4, -5, -6, -7

# sepol_compute_av_reason() reason bits (libsepol services.h).
_REASON_TE, _REASON_CONS, _REASON_RBAC, _REASON_BOUNDS = 1, 2, 4, 8

_MAX_BOOLEAN_CACHE = 1 << 14

# Serialises every call into either backend: both keep their policy in C globals.
LOCK = threading.RLock()

Result = tuple[int, Any]


@dataclass(eq=False)
class PolicyImage:
    """A binary policy held in memory, so a backend reloads exactly what was read
    when the oracle was made even if the file has been rebuilt since."""

    path: Path
    data: bytes
    digest: str = field(init=False)
    _binary: BinaryPolicy | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.data).hexdigest()

    @classmethod
    def read(cls, path: Path) -> PolicyImage:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read binary policy {path}: {exc.strerror or exc}") from None
        if len(data) < 8 or int.from_bytes(data[:4], "little") != POLICYDB_MAGIC:
            raise PolicyError(f"cannot load binary policy {path}: not a binary SELinux policy")
        return cls(path, data)

    def binary(self) -> BinaryPolicy:
        with LOCK:
            if self._binary is None:
                try:
                    self._binary = read_binary_policy(self.data)
                except PolicyError as exc:
                    raise PolicyError(f"cannot read binary policy {self.path}: {exc}") from None
            return self._binary


class Backend(Protocol):
    name: str

    def load(self, image: PolicyImage) -> None: ...

    def analyze(
        self,
        image: PolicyImage,
        scon: str,
        tcon: str,
        tclass: str,
        perms: Sequence[str],
        *,
        quiet: bool = True,
    ) -> Result: ...


class Audit2WhyBackend:
    """``selinux.audit2why``; its libsepol messages on fd 2 are captured and logged."""

    name = "audit2why"

    def __init__(self, module: ModuleType) -> None:
        self._mod = module
        self._loaded: str | None = None
        self._pipe: tuple[int, int] | None = None

    def load(self, image: PolicyImage) -> None:
        if self._loaded == image.digest:
            return
        self._loaded = None
        self._mod.finish()
        # audit2why.init() takes a path: hand it the bytes we hold through a memfd.
        fd = os.memfd_create("svirt-policy", os.MFD_CLOEXEC)
        try:
            view = memoryview(image.data)
            while view:
                view = view[os.write(fd, view) :]
            with self._quiet():
                try:
                    rc = self._mod.init(f"/proc/self/fd/{fd}")
                except (ValueError, RuntimeError, SystemError, OSError):
                    rc = 1
        finally:
            os.close(fd)
        if rc != 0:
            self._mod.finish()  # a failed init leaves a half-made policy behind
            raise PolicyError(f"cannot load binary policy {image.path}: libsepol refused it")
        self._loaded = image.digest

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Send fd 2 to a pipe for the call, then log what libsepol wrote at DEBUG."""
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        read_end, write_end = self._pipe
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon): nothing to protect
            saved = -1
        if saved < 0:
            yield
            return
        os.dup2(write_end, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            chunks = []
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read_end, 65536):
                    chunks.append(chunk)
            if chunks:
                log.debug("libsepol: %s", b"".join(chunks).decode("utf-8", "replace").strip())

    def analyze(
        self,
        image: PolicyImage,
        scon: str,
        tcon: str,
        tclass: str,
        perms: Sequence[str],
        *,
        quiet: bool = True,
    ) -> Result:
        self.load(image)
        try:
            if quiet:
                with self._quiet():
                    result: Result = self._mod.analyze(scon, tcon, tclass, list(perms))
            else:
                result = self._mod.analyze(scon, tcon, tclass, list(perms))
        except (RuntimeError, SystemError, TypeError, ValueError, MemoryError) as exc:
            raise PolicyError(
                f"audit2why failed on policy {image.path}: {' '.join(str(exc).split())}"
            ) from None
        return result


class _AVDecision(ctypes.Structure):
    _fields_ = [
        ("allowed", ctypes.c_uint32),
        ("decided", ctypes.c_uint32),
        ("auditallow", ctypes.c_uint32),
        ("auditdeny", ctypes.c_uint32),
        ("seqno", ctypes.c_uint32),
    ]


_P = ctypes.POINTER
_vp = ctypes.c_void_p


def _bind(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


class LibsepolBackend:
    """libsepol.so through ctypes, reproducing audit2why's analysis step by step."""

    name = "libsepol"

    def __init__(self, lib: ctypes.CDLL, libc: ctypes.CDLL) -> None:
        self._lib = lib
        self._libc = libc
        self._loaded: str | None = None
        self._handle: int | None = None
        self._private: tuple[str, int] | None = None  # (digest, sepol_policydb_t *)
        self._boolean_cache: dict[tuple[str, str, str, int, int], tuple[str, ...]] = {}

    @classmethod
    def open(cls) -> LibsepolBackend:
        name = ctypes.util.find_library("sepol") or "libsepol.so.2"
        lib = ctypes.CDLL(name)
        libc = ctypes.CDLL(None)
        u32, u16, csize = ctypes.c_uint32, ctypes.c_uint16, ctypes.c_size_t
        _bind(libc, "fmemopen", _vp, _vp, csize, ctypes.c_char_p)
        _bind(libc, "fclose", ctypes.c_int, _vp)
        _bind(libc, "free", None, _vp)
        _bind(lib, "sepol_debug", None, ctypes.c_int)
        _bind(lib, "sepol_set_policydb_from_file", ctypes.c_int, _vp)
        _bind(lib, "sepol_context_to_sid", ctypes.c_int, ctypes.c_char_p, csize, _P(u32))
        _bind(lib, "sepol_string_to_security_class", ctypes.c_int, ctypes.c_char_p, _P(u16))
        _bind(lib, "sepol_string_to_av_perm", ctypes.c_int, u16, ctypes.c_char_p, _P(u32))
        _bind(
            lib,
            "sepol_compute_av_reason_buffer",
            ctypes.c_int,
            u32,
            u32,
            u16,
            u32,
            _P(_AVDecision),
            _P(ctypes.c_uint),
            _P(_vp),
            ctypes.c_uint,
        )
        _bind(lib, "sepol_handle_create", _vp)
        _bind(lib, "sepol_msg_set_callback", None, _vp, _vp, _vp)
        _bind(lib, "sepol_policydb_create", ctypes.c_int, _P(_vp))
        _bind(lib, "sepol_policydb_free", None, _vp)
        _bind(lib, "sepol_policydb_read", ctypes.c_int, _vp, _vp)
        _bind(lib, "sepol_policydb_to_image", ctypes.c_int, _vp, _vp, _P(_vp), _P(csize))
        _bind(lib, "sepol_policy_file_create", ctypes.c_int, _P(_vp))
        _bind(lib, "sepol_policy_file_free", None, _vp)
        _bind(lib, "sepol_policy_file_set_mem", None, _vp, _vp, csize)
        _bind(lib, "sepol_policy_file_set_handle", None, _vp, _vp)
        _bind(lib, "sepol_bool_key_create", ctypes.c_int, _vp, ctypes.c_char_p, _P(_vp))
        _bind(lib, "sepol_bool_key_free", None, _vp)
        _bind(lib, "sepol_bool_query", ctypes.c_int, _vp, _vp, _vp, _P(_vp))
        _bind(lib, "sepol_bool_get_value", ctypes.c_int, _vp)
        _bind(lib, "sepol_bool_set_value", None, _vp, ctypes.c_int)
        _bind(lib, "sepol_bool_set", ctypes.c_int, _vp, _vp, _vp, _vp)
        _bind(lib, "sepol_bool_free", None, _vp)
        # The services functions report through libsepol's default handle, which
        # prints to stderr: the decision codes say the same, so silence it.
        lib.sepol_debug(0)
        return cls(lib, libc)

    def _load_global(self, data: bytes) -> int:
        buf = ctypes.c_char_p(data)  # keeps `data` alive and unmoved for the call
        return self._load_global_at(ctypes.cast(buf, _vp).value or 0, len(data))

    def _load_global_at(self, address: int, size: int) -> int:
        fp = self._libc.fmemopen(address, size, b"r")
        if not fp:
            return -1
        try:
            rc: int = self._lib.sepol_set_policydb_from_file(fp)
        finally:
            self._libc.fclose(fp)
        return rc

    def load(self, image: PolicyImage) -> None:
        if self._loaded == image.digest:
            return
        self._loaded = None
        if self._load_global(image.data) != 0:
            raise PolicyError(f"cannot load binary policy {image.path}: libsepol refused it")
        self._loaded = image.digest

    def _sid(self, context: str) -> int | None:
        sid = ctypes.c_uint32()
        raw = context.encode()
        if self._lib.sepol_context_to_sid(raw, len(raw) + 1, ctypes.byref(sid)) < 0:
            return None
        return sid.value

    def _compute(
        self, ssid: int, tsid: int, tclass: int, av: int
    ) -> tuple[int, _AVDecision, str | None]:
        avd = _AVDecision()
        reason = ctypes.c_uint()
        buf = _vp()
        rc = self._lib.sepol_compute_av_reason_buffer(
            ssid, tsid, tclass, av, ctypes.byref(avd), ctypes.byref(reason), ctypes.byref(buf), 0
        )
        text = None
        if buf.value:
            text = ctypes.string_at(buf.value).decode("utf-8", "replace")
            self._libc.free(buf)
        if rc < 0:
            return -1, avd, text
        return reason.value, avd, text

    def analyze(
        self,
        image: PolicyImage,
        scon: str,
        tcon: str,
        tclass: str,
        perms: Sequence[str],
        *,
        quiet: bool = True,
    ) -> Result:
        self.load(image)
        ssid = self._sid(scon)
        if ssid is None:
            return BADSCON, None
        tsid = self._sid(tcon)
        if tsid is None:
            return BADTCON, None
        cls = ctypes.c_uint16()
        if self._lib.sepol_string_to_security_class(tclass.encode(), ctypes.byref(cls)) < 0:
            return BADTCLASS, None
        av = 0
        for perm in perms:
            bit = ctypes.c_uint32()
            if self._lib.sepol_string_to_av_perm(cls, perm.encode(), ctypes.byref(bit)) < 0:
                return BADPERM, None
            av |= bit.value
        reason, avd, text = self._compute(ssid, tsid, cls.value, av)
        if reason < 0:
            return BADCOMPUTE, None
        if reason == 0:
            return ALLOW, None
        if reason & _REASON_TE:
            found = self._booleans(image, scon, tcon, cls.value, av)
            if found:
                return BOOLEAN, found
            return (DONTAUDIT, None) if av & ~avd.auditdeny else (TERULE, None)
        if reason & _REASON_CONS:
            return CONSTRAINT, text
        if reason & _REASON_RBAC:
            return RBAC, None
        if reason & _REASON_BOUNDS:
            return BOUNDS, None
        return BADCOMPUTE, None

    def _booleans(
        self, image: PolicyImage, scon: str, tcon: str, tclass: int, av: int
    ) -> list[tuple[str, int]]:
        """The booleans that, flipped alone, allow the access (audit2why's answer).

        Checking one means loading the policy with it flipped (~0.1 s), so that is
        done once per type pair and class, only for the booleans whose conditional
        rules could grant ``av`` (read from the binary policy), to learn which flips
        satisfy type enforcement. Constraints, RBAC and bounds do not depend on
        booleans: the binary reader evaluates them for the full contexts, and where
        it cannot (bounded types, odd expressions) each flip is loaded and asked.
        """
        binary = image.binary()
        stype = binary.type_value(scon.split(":")[2])
        ttype = binary.type_value(tcon.split(":")[2])
        if stype is None or ttype is None:
            return []
        full_key = (image.digest, scon, tcon, tclass, av)
        found = self._boolean_cache.get(full_key)
        if found is None:
            te_key = (image.digest, str(stype), str(ttype), tclass, av)
            te_ok = self._boolean_cache.get(te_key)
            results: dict[str, int] = {}
            if te_ok is None:
                for name in binary.boolean_candidates(stype, ttype, tclass, av):
                    results[name] = self._reason_if_flipped(image, name, scon, tcon, tclass, av)
                te_ok = tuple(n for n, r in results.items() if r >= 0 and not r & _REASON_TE)
                self._boolean_cache[te_key] = te_ok
            verdict = binary.passes_after_te(scon, tcon, tclass, av) if te_ok else False
            if verdict is None:  # the reader cannot tell: ask libsepol with each flipped
                found = tuple(
                    n
                    for n in te_ok
                    if (
                        results[n]
                        if n in results
                        else self._reason_if_flipped(image, n, scon, tcon, tclass, av)
                    )
                    == 0
                )
            else:
                found = te_ok if verdict else ()
            if len(self._boolean_cache) > _MAX_BOOLEAN_CACHE:
                self._boolean_cache.clear()
            self._boolean_cache[full_key] = found
        defaults = {b.name: b.default for b in binary.booleans}
        return [(name, int(not defaults[name])) for name in found]

    def _private_policydb(self, image: PolicyImage) -> int:
        if self._private is not None and self._private[0] == image.digest:
            return self._private[1]
        if self._private is not None:
            self._lib.sepol_policydb_free(self._private[1])
            self._private = None
        if self._handle is None:
            self._handle = self._lib.sepol_handle_create()
            self._lib.sepol_msg_set_callback(self._handle, None, None)
        pdb = _vp()
        pf = _vp()
        if self._lib.sepol_policydb_create(ctypes.byref(pdb)) < 0:
            raise PolicyError("libsepol: cannot create a policy database")
        if self._lib.sepol_policy_file_create(ctypes.byref(pf)) < 0:
            self._lib.sepol_policydb_free(pdb)
            raise PolicyError("libsepol: cannot create a policy file")
        buf = ctypes.c_char_p(image.data)
        try:
            self._lib.sepol_policy_file_set_mem(pf, ctypes.cast(buf, _vp), len(image.data))
            self._lib.sepol_policy_file_set_handle(pf, self._handle)
            rc = self._lib.sepol_policydb_read(pdb, pf)
        finally:
            self._lib.sepol_policy_file_free(pf)
        if rc < 0 or not pdb.value:
            self._lib.sepol_policydb_free(pdb)
            raise PolicyError(f"cannot load binary policy {image.path}: libsepol refused it")
        self._private = (image.digest, pdb.value)
        return pdb.value

    def _set_boolean(self, pdb: int, name: str, value: int | None) -> int:
        """Set a boolean in the private copy; returns its previous value."""
        key = _vp()
        boolean = _vp()
        lib = self._lib
        if lib.sepol_bool_key_create(self._handle, name.encode(), ctypes.byref(key)) < 0:
            raise PolicyError(f"libsepol: cannot make a key for boolean {name}")
        try:
            if lib.sepol_bool_query(self._handle, pdb, key, ctypes.byref(boolean)) < 0:
                raise PolicyError(f"libsepol: boolean {name} not in the policy")
            old = int(lib.sepol_bool_get_value(boolean))
            lib.sepol_bool_set_value(boolean, (1 - old) if value is None else value)
            if lib.sepol_bool_set(self._handle, pdb, key, boolean) < 0:
                raise PolicyError(f"libsepol: cannot set boolean {name}")
            return old
        finally:
            if boolean.value:
                lib.sepol_bool_free(boolean)
            lib.sepol_bool_key_free(key)

    def image_with_booleans(self, image: PolicyImage, values: Mapping[str, bool]) -> bytes:
        """The policy's bytes with boolean defaults changed (what ``setsebool -P`` would
        build), from the private copy; the copy is restored afterwards."""
        pdb = self._private_policydb(image)
        known = {b.name for b in image.binary().booleans}
        for name in values:
            if name not in known:
                raise PolicyError(f"boolean {name} is not defined in policy {image.path}")
        previous: dict[str, int] = {}
        img = _vp()
        size = ctypes.c_size_t()
        try:
            for name, value in values.items():
                previous[name] = self._set_boolean(pdb, name, int(value))
            rc = self._lib.sepol_policydb_to_image(
                self._handle, pdb, ctypes.byref(img), ctypes.byref(size)
            )
            if rc < 0 or not img.value:
                raise PolicyError("libsepol: cannot write the policy image")
            return ctypes.string_at(img.value, size.value)
        finally:
            if img.value:
                self._libc.free(img)
            for name, old in previous.items():
                self._set_boolean(pdb, name, old)

    def _reason_if_flipped(
        self, image: PolicyImage, name: str, scon: str, tcon: str, tclass: int, av: int
    ) -> int:
        """The compute-av reason bits with boolean ``name`` flipped (-1: no answer)."""
        pdb = self._private_policydb(image)
        old = self._set_boolean(pdb, name, None)
        img = _vp()
        size = ctypes.c_size_t()
        try:
            if (
                self._lib.sepol_policydb_to_image(
                    self._handle, pdb, ctypes.byref(img), ctypes.byref(size)
                )
                < 0
            ):
                raise PolicyError("libsepol: cannot write the policy image")
        finally:
            self._set_boolean(pdb, name, old)
        try:
            self._loaded = None
            if self._load_global_at(img.value or 0, size.value) != 0:
                raise PolicyError("libsepol: cannot load the policy with a boolean flipped")
            # SIDs do not survive a reload.
            ssid, tsid = self._sid(scon), self._sid(tcon)
            if ssid is None or tsid is None:
                return -1
            reason, _avd, _text = self._compute(ssid, tsid, tclass, av)
            return reason
        finally:
            self._libc.free(img)
            self.load(image)


_backends: dict[str, Backend | None] = {}


def get_backend(name: str) -> Backend | None:
    """The named backend, or None when it cannot be loaded here (cached)."""
    with LOCK:
        if name not in _backends:
            _backends[name] = _open_backend(name)
        return _backends[name]


def _open_backend(name: str) -> Backend | None:
    if name == "audit2why":
        try:
            import selinux.audit2why as mod
        except ImportError:
            return None
        return Audit2WhyBackend(mod)
    if name == "libsepol":
        try:
            return LibsepolBackend.open()
        except (OSError, AttributeError):
            return None
    raise PolicyError(f"unknown policy backend '{name}' (choose audit2why or libsepol)")
