"""
L{originalHash}: the number the original sAsync 0.9 stored for a group ID
or an array coordinate: C{hash()} of Python 2 on a 64-bit build (Python
3's C{hash()} of a str changes with every process, so it cannot be used).

The original stored C{hash(ID)} in its tables' C{group_id} and
C{hash(x)}, C{hash(y)}, C{hash(z)} in C{sasync_array}. For an int that is
the int itself (but C{-1}, which Python hashes to C{-2}), and the upgraded
tables keep those numbers as int IDs and coordinates. A store whose
original ID was a str or a tuple is found again with
C{Items(originalHash(ID), url)}.
"""

from __future__ import annotations

import math
from typing import Final

_BITS: Final = 64
_MASK: Final = (1 << _BITS) - 1
#: Python 2's long digits on 64-bit builds.
_LONG_SHIFT: Final = 30


def _signed(x: int) -> int:
    # Wrap to a C long, as Python 2's arithmetic did.
    x &= _MASK
    return x - (1 << _BITS) if x >> (_BITS - 1) else x


def _final(x: int) -> int:
    x = _signed(x)
    return -2 if x == -1 else x


def _longHash(n: int) -> int:
    sign, n = (-1, -n) if n < 0 else (1, n)
    digits = []
    while n:
        digits.append(n & ((1 << _LONG_SHIFT) - 1))
        n >>= _LONG_SHIFT
    x = 0
    for digit in reversed(digits):
        x = ((x << _LONG_SHIFT) | (x >> (_BITS - _LONG_SHIFT))) & _MASK
        x = (x + digit) & _MASK
        if x < digit:
            x += 1
    return _final(x * sign)


def _floatHash(v: float) -> int:
    if math.isinf(v):
        return -271828 if v < 0 else 314159
    fraction, whole = math.modf(v)
    if fraction == 0.0:
        return _longHash(int(whole))
    mantissa, exponent = math.frexp(v)
    mantissa *= 2147483648.0  # The top 32 bits...
    high = int(mantissa)
    mantissa = (mantissa - high) * 2147483648.0  # ...and the next 32.
    return _final(high + int(mantissa) + (exponent << 15))


def _textHash(units: list[int]) -> int:
    # Python 2's str (bytes) and unicode (code points, a UCS-4 build).
    if not units:
        return 0
    x = units[0] << 7
    for unit in units:
        x = ((1000003 * x) ^ unit) & _MASK
    return _final(x ^ len(units))


def _tupleHash(items: tuple[object, ...]) -> int:
    x, multiplier = 0x345678, 1000003
    left = len(items)
    for item in items:
        left -= 1
        x = _signed((x ^ originalHash(item)) * multiplier)
        multiplier = _signed(multiplier + 82520 + left + left)
    return _final(x + 97531)


def originalHash(key: object) -> int:
    """
    @return: what Python 2 (64-bit) gave for C{hash(key)}: the number the
        original sAsync stored for C{key} as a group ID or a coordinate. A
        str is hashed as Python 2's C{unicode} (the same number as its
        C{str} for ASCII text), bytes as its C{str}.
    @raise TypeError: C{key} is not an int, bool, float, str, bytes, or a
        tuple of those (Python 2's C{hash()} of C{None} or of an object
        changed from one run to the next: the original could not find
        those groups again itself).
    @raise ValueError: C{key} is a NaN.
    """
    if isinstance(key, int):
        return _longHash(int(key))
    if isinstance(key, float):
        if math.isnan(key):
            raise ValueError("NaN has no stable hash")
        return _floatHash(key)
    if isinstance(key, str):
        return _textHash([ord(c) for c in key])
    if isinstance(key, bytes):
        return _textHash(list(key))
    if isinstance(key, tuple):
        return _tupleHash(key)
    raise TypeError(
        f"the original sAsync's hash() of a {type(key).__name__} ({key!r}) was"
        " not stable: only int, bool, float, str, bytes and tuples of those"
        " have one"
    )


__all__ = ["originalHash"]
