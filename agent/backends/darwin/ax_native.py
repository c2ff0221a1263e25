"""The AX (HIServices) and CoreFoundation calls of element lookups, through ctypes (:class:`AxNative`).

Each method is one documented call whose answer is turned into Python values at once: a
``CFString`` into ``str`` (at most :data:`~agent.backends.darwin.ax_model.MAX_STRING_UNITS`
UTF-16 code units copied), a ``CFBoolean`` into ``bool``, a ``CFNumber`` into ``int`` or
``float``, an ``AXValue`` holding a ``CGPoint`` or ``CGSize`` into an ``(a, b)`` pair, an
``AXUIElement`` into an :class:`AxRef`; anything else (an ``AXValue`` holding an ``AXError``
for an attribute the element lacks, ``kCFNull``) into None.  Every method answers
``(AXError, value)`` and never raises for an error code.

Ownership: what a Copy/Create call returns is released here; an element handed out as an
:class:`AxRef` is retained and stays valid until :meth:`AxNative.end_lookup`, which the finder
calls after each lookup.  Loads on macOS only (the frameworks are missing elsewhere:
:class:`OSError`).  Used from one thread, the element lookup's worker.
"""

from __future__ import annotations

import ctypes
import posixpath
from dataclasses import dataclass
from typing import Any

from agent.backends.darwin.ax_model import MAX_STRING_UNITS
from agent.backends.darwin.constants import APPLICATION_SERVICES, CORE_FOUNDATION, LIBSYSTEM

# CoreFoundation and AXValue.h constants.
K_CF_STRING_ENCODING_UTF8 = 0x08000100
K_CF_NUMBER_DOUBLE_TYPE = 13
K_AX_VALUE_CGPOINT = 1
K_AX_VALUE_CGSIZE = 2
#: ``AXCopyMultipleAttributeOptions``: 0 answers an ``AXError`` value for a missing attribute
#: instead of stopping at it.
K_AX_COPY_MULTIPLE_OPTIONS = 0
#: libproc.h: the longest path ``proc_pidpath`` writes; ``proc_name``'s buffer (2 * MAXCOMLEN + 1).
PROC_PIDPATHINFO_MAXSIZE = 4096
PROC_NAME_SIZE = 2 * 16 + 1


@dataclass(frozen=True)
class AxRef:
    """An ``AXUIElementRef`` this module retained (valid until :meth:`AxNative.end_lookup`)."""

    address: int


class _CFRange(ctypes.Structure):
    _fields_ = [("location", ctypes.c_long), ("length", ctypes.c_long)]


def _declare(library: Any, name: str, restype: Any, argtypes: list[Any]) -> Any:
    fn = getattr(library, name)
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


class AxNative:
    """AX, CoreFoundation and libproc functions, declared with their documented signatures.

    :raises OSError: a framework cannot be loaded (not macOS).
    :raises AttributeError: a function is missing (a macOS older than 10.10).
    """

    def __init__(self) -> None:
        cf = ctypes.CDLL(CORE_FOUNDATION)
        ax = ctypes.CDLL(APPLICATION_SERVICES)
        libc = ctypes.CDLL(LIBSYSTEM)
        ref, refp, err = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int32
        type_id, index = ctypes.c_ulong, ctypes.c_long
        self._release = _declare(cf, "CFRelease", None, [ref])
        self._retain = _declare(cf, "CFRetain", ref, [ref])
        self._type_of = _declare(cf, "CFGetTypeID", type_id, [ref])
        self._string_create = _declare(
            cf, "CFStringCreateWithCString", ref, [ref, ctypes.c_char_p, ctypes.c_uint32]
        )
        self._string_length = _declare(cf, "CFStringGetLength", index, [ref])
        self._string_chars = _declare(
            cf, "CFStringGetCharacters", None, [ref, _CFRange, ctypes.POINTER(ctypes.c_uint16)]
        )
        self._boolean_value = _declare(cf, "CFBooleanGetValue", ctypes.c_ubyte, [ref])
        self._number_value = _declare(cf, "CFNumberGetValue", ctypes.c_ubyte, [ref, index, ref])
        self._array_create = _declare(cf, "CFArrayCreate", ref, [ref, refp, index, ref])
        self._array_count = _declare(cf, "CFArrayGetCount", index, [ref])
        self._array_at = _declare(cf, "CFArrayGetValueAtIndex", ref, [ref, index])
        self._array_callbacks = ctypes.addressof(ctypes.c_void_p.in_dll(cf, "kCFTypeArrayCallBacks"))
        self._create_system_wide = _declare(ax, "AXUIElementCreateSystemWide", ref, [])
        self._set_timeout = _declare(ax, "AXUIElementSetMessagingTimeout", err, [ref, ctypes.c_float])
        self._element_at = _declare(
            ax, "AXUIElementCopyElementAtPosition", err, [ref, ctypes.c_float, ctypes.c_float, refp]
        )
        self._copy_attribute = _declare(ax, "AXUIElementCopyAttributeValue", err, [ref, ref, refp])
        self._copy_attributes = _declare(
            ax, "AXUIElementCopyMultipleAttributeValues", err, [ref, ref, ctypes.c_uint32, refp]
        )
        self._is_settable = _declare(
            ax, "AXUIElementIsAttributeSettable", err, [ref, ref, ctypes.POINTER(ctypes.c_ubyte)]
        )
        self._get_pid = _declare(ax, "AXUIElementGetPid", err, [ref, ctypes.POINTER(ctypes.c_int)])
        self._value_type = _declare(ax, "AXValueGetType", ctypes.c_uint32, [ref])
        self._value_get = _declare(ax, "AXValueGetValue", ctypes.c_ubyte, [ref, ctypes.c_uint32, ref])
        self._proc_pidpath = _declare(
            libc, "proc_pidpath", ctypes.c_int, [ctypes.c_int, ref, ctypes.c_uint32]
        )
        self._proc_name = _declare(libc, "proc_name", ctypes.c_int, [ctypes.c_int, ref, ctypes.c_uint32])
        self._string_type = int(_declare(cf, "CFStringGetTypeID", type_id, [])())
        self._boolean_type = int(_declare(cf, "CFBooleanGetTypeID", type_id, [])())
        self._number_type = int(_declare(cf, "CFNumberGetTypeID", type_id, [])())
        self._element_type = int(_declare(ax, "AXUIElementGetTypeID", type_id, [])())
        self._value_type_id = int(_declare(ax, "AXValueGetTypeID", type_id, [])())
        self._names: dict[str, int] = {}
        self._arrays: dict[tuple[str, ...], int] = {}
        self._owned: list[int] = []
        self._system: int | None = None

    # -- what the finder calls -------------------------------------------------------------------

    def system_wide(self) -> AxRef:
        """The system-wide element (``AXUIElementCreateSystemWide``), kept until :meth:`close`."""
        if self._system is None:
            address = self._create_system_wide()
            if not address:
                msg = "AXUIElementCreateSystemWide returned NULL"
                raise OSError(msg)
            self._system = int(address)
        return AxRef(self._system)

    def set_timeout(self, element: AxRef, seconds: float) -> int:
        """``AXUIElementSetMessagingTimeout``: on the system-wide element, for every call of this process."""
        return int(self._set_timeout(element.address, seconds))

    def element_at(self, element: AxRef, x: float, y: float) -> tuple[int, AxRef | None]:
        """``AXUIElementCopyElementAtPosition`` at (``x``, ``y``) points, top-left origin."""
        out = ctypes.c_void_p()
        code = int(self._element_at(element.address, x, y, ctypes.byref(out)))
        if code != 0 or not out.value:
            return code, None
        self._owned.append(int(out.value))  # a Copy: ours to release at end_lookup
        return code, AxRef(int(out.value))

    def attribute(self, element: AxRef, name: str) -> tuple[int, Any]:
        """``AXUIElementCopyAttributeValue`` of one attribute, as a Python value."""
        out = ctypes.c_void_p()
        code = int(self._copy_attribute(element.address, self._name(name), ctypes.byref(out)))
        if code != 0 or not out.value:
            return code, None
        try:
            return code, self._convert(int(out.value))
        finally:
            self._release(out.value)

    def attributes(self, element: AxRef, names: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
        """``AXUIElementCopyMultipleAttributeValues``: ``names`` in one round trip, a missing one None."""
        out = ctypes.c_void_p()
        code = int(
            self._copy_attributes(
                element.address, self._array(names), K_AX_COPY_MULTIPLE_OPTIONS, ctypes.byref(out)
            )
        )
        if code != 0 or not out.value:
            return code, {}
        try:
            count = min(int(self._array_count(out.value)), len(names))
            values = {names[i]: self._convert(self._array_at(out.value, i)) for i in range(count)}
        finally:
            self._release(out.value)
        return code, values

    def settable(self, element: AxRef, name: str) -> tuple[int, bool]:
        """``AXUIElementIsAttributeSettable``."""
        flag = ctypes.c_ubyte(0)
        code = int(self._is_settable(element.address, self._name(name), ctypes.byref(flag)))
        return code, bool(flag.value)

    def pid(self, element: AxRef) -> tuple[int, int]:
        """``AXUIElementGetPid`` (no message to the application)."""
        pid = ctypes.c_int(0)
        code = int(self._get_pid(element.address, ctypes.byref(pid)))
        return code, int(pid.value)

    def process_name(self, pid: int) -> str | None:
        """The file name of the process's executable (``proc_pidpath``: ``Safari``), else its
        ``proc_name``; None when neither answers (the process ended)."""
        buffer = ctypes.create_string_buffer(PROC_PIDPATHINFO_MAXSIZE)
        length = int(self._proc_pidpath(pid, ctypes.cast(buffer, ctypes.c_void_p), PROC_PIDPATHINFO_MAXSIZE))
        if length > 0:
            name = posixpath.basename(buffer.raw[:length].decode("utf-8", "replace"))
            if name:
                return name
        short = ctypes.create_string_buffer(PROC_NAME_SIZE)
        length = int(self._proc_name(pid, ctypes.cast(short, ctypes.c_void_p), PROC_NAME_SIZE))
        if length <= 0:
            return None
        return short.raw[:length].decode("utf-8", "replace") or None

    def end_lookup(self) -> None:
        """Release every element handed out since the last call."""
        owned, self._owned = self._owned, []
        for address in owned:
            self._release(address)

    def close(self) -> None:
        """Release everything, the system-wide element and the attribute names included."""
        self.end_lookup()
        for address in [*self._arrays.values(), *self._names.values()]:
            self._release(address)
        self._arrays.clear()
        self._names.clear()
        if self._system is not None:
            self._release(self._system)
            self._system = None

    # -- CoreFoundation ----------------------------------------------------------------------------

    def _name(self, name: str) -> int:
        address = self._names.get(name)
        if address is None:
            made = self._string_create(None, name.encode("utf-8"), K_CF_STRING_ENCODING_UTF8)
            if not made:
                msg = "CFStringCreateWithCString returned NULL"
                raise OSError(msg)
            address = self._names[name] = int(made)
        return address

    def _array(self, names: tuple[str, ...]) -> int:
        address = self._arrays.get(names)
        if address is None:
            items = (ctypes.c_void_p * len(names))(*(self._name(n) for n in names))
            made = self._array_create(None, items, len(names), self._array_callbacks)
            if not made:
                msg = "CFArrayCreate returned NULL"
                raise OSError(msg)
            address = self._arrays[names] = int(made)
        return address

    def _convert(self, address: int | None) -> Any:
        """A borrowed CF value as a Python value (an element is retained, see :meth:`end_lookup`)."""
        kind = int(self._type_of(address)) if address else None
        if address is None or kind is None:
            return None
        if kind == self._string_type:
            return self._string(address)
        if kind == self._boolean_type:
            return bool(self._boolean_value(address))
        if kind == self._number_type:
            return self._number(address)
        if kind == self._value_type_id:
            return self._pair(address)
        return self._element(address) if kind == self._element_type else None

    def _number(self, address: int) -> int | float | None:
        number = ctypes.c_double()
        if not self._number_value(address, K_CF_NUMBER_DOUBLE_TYPE, ctypes.byref(number)):
            return None
        value = float(number.value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value

    def _pair(self, address: int) -> tuple[float, float] | None:
        """An AXValue's CGPoint or CGSize; None for an AXError (a missing attribute) or another kind."""
        value_type = int(self._value_type(address))
        if value_type not in (K_AX_VALUE_CGPOINT, K_AX_VALUE_CGSIZE):
            return None
        pair = (ctypes.c_double * 2)()
        if not self._value_get(address, value_type, ctypes.byref(pair)):
            return None
        return float(pair[0]), float(pair[1])

    def _element(self, address: int) -> AxRef:
        self._retain(address)
        self._owned.append(address)
        return AxRef(address)

    def _string(self, address: int) -> str:
        units = max(0, min(int(self._string_length(address)), MAX_STRING_UNITS))
        if units == 0:
            return ""
        buffer = (ctypes.c_uint16 * units)()
        self._string_chars(address, _CFRange(0, units), buffer)
        return bytes(buffer).decode("utf-16-le", "replace")


__all__ = ["AxNative", "AxRef"]
