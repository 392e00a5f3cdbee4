"""Durations and sizes as people write them in inventory.yml: one reading of each, for every key.

A duration is a bare number of seconds (``30``, ``2.5``: what every duration key took before units
existed, so old inventories load with the same values) or a whole number with one unit: ``30s``,
``2m``, ``6h``, ``1d``. A size is a whole number with one unit: ``B``; ``KB`` (or ``kB``), ``MB``,
``GB`` (powers of 1000, as disks and networks count) or ``KiB``, ``MiB``, ``GiB`` (powers of 1024).
``off`` (YAML reads it as false) is 0, for the keys that allow off.

Why so strict: ``1.5m`` is one slip from ``15m`` and reads better as ``90s``; a bare size of ``100``
is bytes to one person and megabytes to the next, and a 100-byte log cap fails silently. Anything
else raises UnitError, one line ending in what to write instead; the inventory adds file, line and
key. The results are plain ints (or the bare float that was written), so what reaches a host is the
number it always got.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, Dict, Optional, Tuple, Union

Number = Union[int, float]

SECONDS: Dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}  # largest first: the shortest form wins
_SECONDS_NAMES = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
BYTES: Dict[str, int] = {"GB": 1000 ** 3, "MB": 1000 ** 2, "KB": 1000, "kB": 1000,
                         "GiB": 1024 ** 3, "MiB": 1024 ** 2, "KiB": 1024, "B": 1}
_BYTES_FAMILIES = (("GB", "MB", "KB", "B"), ("GiB", "MiB", "KiB", "B"))

# what a slip may look like (spaces, a sign, a unit in the wrong case): read, so the error can name the fix
_LOOSE = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

DURATION_FORMS = "seconds (30) or a whole number of s, m, h or d (30s, 2m, 6h, 1d)"
SIZE_FORMS = "a whole number of B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024): 500KB, 100MB, 1GiB"


class UnitError(ValueError):
    """Not a duration or a size: one line, what was written and what to write instead (no file, line
    or key: the caller knows those)."""


def parse_duration(value: Any, *, allow_off: bool = False, written: Optional[str] = None) -> Number:
    """Seconds, from a YAML-loaded ``value``.

    A bare number is seconds and comes back as it is: an int stays that int and a fraction (2.5)
    stays that float, since duration keys took both before units existed and the host gets the
    same number as before. A whole number with a unit comes back as an int (``2m`` -> 120), so
    ``2m`` and ``120`` are the same setting. A fraction needs no unit (``1.5m`` is refused: write
    ``90s``). ``off``/false, and ``'off'`` quoted, give 0 where ``allow_off``; refused elsewhere.
    Negative numbers, ``true``, empty values, other units and other types raise UnitError.
    ``written`` is the text as written (``yes`` for a True), for the message only.
    """
    hint = "write " + DURATION_FORMS + (", or off" if allow_off else "")
    shown = _shown(value, written)
    if _off(value, shown, hint, allow_off, "duration"):
        return 0
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise UnitError("%s is not a duration: %s" % (shown, hint))
        if value < 0:
            raise UnitError("%s is negative: %s" % (shown, hint))
        return value
    sign, number, unit, exact = _read(value, SECONDS, shown, "duration", hint)
    if sign == "-":
        raise UnitError("%s is negative: %s" % (shown, hint))
    if unit is None:  # bare seconds in quotes: the number a bare one would be
        return _bare(number, shown, exact)
    seconds = number * SECONDS[unit]
    if "." in value:
        raise UnitError("%s is not a whole number of %s: write %s"
                        % (shown, _SECONDS_NAMES[unit], _seconds_text(seconds)))
    if not exact:
        raise UnitError("%s is not written as a duration: write %s%s (%s)"
                        % (shown, number, unit, _SECONDS_NAMES[unit]))
    return int(seconds)


def _off(value: Any, shown: str, hint: str, allow_off: bool, kind: str) -> bool:
    """True for off (``off``, false) where the key allows it; UnitError for off elsewhere and for true."""
    if _is_off(value):
        if allow_off:
            return True
        raise UnitError("%s: this key cannot be off; %s" % (shown, hint))
    if isinstance(value, bool):
        raise UnitError("%s%s is not a %s: %s" % (shown, _as_true(shown), kind, hint))
    return False


def parse_size(value: Any, *, allow_off: bool = False, written: Optional[str] = None) -> int:
    """Bytes, from a YAML-loaded ``value``: ``500KB`` -> 500000, ``1MiB`` -> 1048576.

    Always an int. Only 0 may be bare (zero is zero in any unit); ``100`` is refused, since bytes
    and megabytes are both someone's guess. Whole numbers only (``1.5GB``: write ``1500MB``).
    ``off``/false give 0 where ``allow_off``; negative numbers, ``true``, empty values, other units
    and other types raise UnitError. ``written`` is the text as written, for the message only.
    """
    hint = "write " + SIZE_FORMS + (", or off" if allow_off else "")
    shown = _shown(value, written)
    if _off(value, shown, hint, allow_off, "size"):
        return 0
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise UnitError("%s is not a size: %s" % (shown, hint))
        if value < 0:
            raise UnitError("%s is negative: %s" % (shown, hint))
        if value == 0 and isinstance(value, int):
            return 0
        raise UnitError("%s has no unit: %s" % (shown, hint))
    sign, number, unit, exact = _read(value, BYTES, shown, "size", hint)
    if sign == "-":
        raise UnitError("%s is negative: %s" % (shown, hint))
    if unit is None:
        if number == 0 and "." not in value:
            return 0
        raise UnitError("%s has no unit: %s" % (shown, hint))
    size = number * BYTES[unit]
    if "." in value:
        family = _BYTES_FAMILIES[1] if unit.endswith("iB") else _BYTES_FAMILIES[0]
        if size != size.to_integral_value():
            raise UnitError("%s is not a whole number of bytes: %s" % (shown, hint))
        raise UnitError("%s is not a whole number of %s: write %s" % (shown, unit, _largest(int(size), family, BYTES)))
    if not exact:
        raise UnitError("%s is not written as a size: write %s%s" % (shown, number, unit))
    return int(size)


def _is_off(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "off")


def _shown(value: Any, written: Optional[str]) -> str:
    """The value as the message shows it: text quoted (as the inventory's other messages do), the
    rest as it was written."""
    if isinstance(value, str):
        return repr(value)
    if written is not None and written.strip():
        return written.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _as_true(shown: str) -> str:
    return "" if shown.lower() == "true" else " (YAML reads it as true)"


def _read(value: Any, units: Dict[str, int], shown: str, what: str,
          hint: str) -> Tuple[str, Decimal, Optional[str], bool]:
    """(sign, number, unit or None, written exactly so) from text; UnitError when it is no number
    with a unit of ``units`` (also in another case: ``30S``, ``100mb`` are read, to name the fix)."""
    if value is None:  # `key:` with nothing after it
        raise UnitError("no value: %s" % hint)
    if not isinstance(value, str):
        raise UnitError("%s is not a %s: %s" % (shown, what, hint))
    if not value.strip():
        raise UnitError("%s is empty: %s" % (shown, hint))
    match = _LOOSE.match(value)
    if not match:
        raise UnitError("%s is not a %s: %s" % (shown, what, hint))
    sign, number, unit = match.groups()
    if unit and unit not in units:
        same = [u for u in units if u.lower() == unit.lower()]
        if not same:
            raise UnitError("%s is not a %s: %s" % (shown, what, hint))
        unit = same[0]  # dicts keep order: KB before kB
    exact = not sign and value == number + unit
    return sign, Decimal(number), unit or None, exact


def _bare(number: Decimal, shown: str, exact: bool) -> Number:
    """Seconds written bare in quotes ('30', '2.5'): the number YAML gives for them unquoted."""
    if not exact:
        raise UnitError("%s is not written as a duration: write %s" % (shown, number))
    return float(number) if "." in str(number) else int(number)


def _seconds_text(seconds: Decimal) -> str:
    """The shortest right way to write ``seconds``: a whole unit if one fits, else bare seconds."""
    if seconds == seconds.to_integral_value():
        return _largest(int(seconds), tuple(SECONDS), SECONDS)
    return "%s (a bare number is seconds)" % format(seconds.normalize(), "f")


def _largest(amount: int, family: Tuple[str, ...], units: Dict[str, int]) -> str:
    """``amount`` with the largest unit of ``family`` that divides it (0 -> the smallest)."""
    for unit in family:
        if amount and amount % units[unit] == 0:
            return "%d%s" % (amount // units[unit], unit)
    return "%d%s" % (amount, family[-1])
