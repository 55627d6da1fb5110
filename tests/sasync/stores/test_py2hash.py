"""
L{sasync.stores.originalHash} gives what Python 2.7.18 (64-bit, UCS-4)
printed for C{hash(key)}: the numbers below are its output.
"""

from __future__ import annotations

from typing import Any

import pytest

from sasync.stores import originalHash

PYTHON2: list[tuple[Any, int]] = [
    (0, 0),
    (1, 1),
    (-1, -2),
    (-2, -2),
    (7, 7),
    (2**31, 2147483648),
    (2**63 - 1, 9223372036854775807),
    (-(2**63), -9223372036854775808),
    (2**63, -9223372036854775808),
    (2**64, 1),
    (2**70, 64),
    (-(2**70), -64),
    (10**30, 5076944324515372240),
    (True, 1),
    (False, 0),
    (1.5, 1610645504),
    (-0.25, -1073774592),
    (0.1, 2576882278),
    (1e300, 8474648701417850880),
    (3.0, 3),
    (-1.0, -2),
    (float("inf"), 314159),
    (1e-300, 3316461835),
    ("prefs", -1221839637565758149),
    (b"prefs", -1221839637565758149),
    ("", 0),
    ("a", 12416037344),
    ("\xfc", 32256097021),
    ("\u20ac", 1070595220141),
    ("x" * 100, -5622435189161604924),
    (("a", 1), -3828833845468547008),
    ((), 3527539),
    (((1, 2), "b"), 5321187816216934682),
    ((1.5, "caf\xe9", -1), 3040237690143864866),
    ("\U0001d11e", 15241005677599),
]


@pytest.mark.parametrize(("key", "expected"), PYTHON2)
def test_python2(key: Any, expected: int) -> None:
    """
    Each key hashes as Python 2 hashed it.
    """
    assert originalHash(key) == expected


def test_unstable() -> None:
    """
    Keys whose Python 2 hash changed between runs are refused, naming the
    type; a NaN too.
    """
    for key in (None, frozenset({1}), object(), (1, None)):
        with pytest.raises(TypeError, match="not stable"):
            originalHash(key)
    with pytest.raises(ValueError, match="NaN"):
        originalHash(float("nan"))
