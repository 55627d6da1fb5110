"""
L{sasync.stores._keys}: equal keys have one canonical form and unequal ones
different forms; the typed form gives the key back.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sasync.stores._keys import (
    canonicalText,
    decodeKey,
    mayBeTyped,
    sortedKeys,
    typedText,
)
from sasync.stores._storage import nameFromRow, nameKey, nameText

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    # Numbers that are equal across types, often.
    | st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, True, False, 2.0, 2**53, float(2**53)])
)
keys = st.recursive(
    scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)


def sameTypes(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return all(sameTypes(x, y) for x, y in zip(a, b, strict=True))
    return True


@settings(max_examples=200, deadline=None)
@given(keys, keys)
def test_canonicalIsEquality(a: Hashable, b: Hashable) -> None:
    """
    Two keys have the same canonical form exactly when Python says they
    are equal.
    """
    assert (canonicalText(a) == canonicalText(b)) == (a == b)


@settings(max_examples=200, deadline=None)
@given(keys)
def test_typedRoundTrip(key: Hashable) -> None:
    """
    The typed form decodes to an equal key of the same types, and is
    ASCII; a name column value reads back as the key, str or not.
    """
    text = typedText(key)
    assert text.isascii() and mayBeTyped(text)
    back = decodeKey(text)
    assert back == key and sameTypes(back, key)
    assert nameFromRow(nameText(key), nameKey(key)) == key


def test_strNamesStayPlain() -> None:
    """
    A str name is stored as itself, with the digest earlier versions gave
    it, even one that reads like another key's typed form; a str with a
    NUL is stored in its typed form.
    """
    for name in ("plain", "[1,2]", "null", "7", ""):
        assert nameText(name) == name
        assert nameFromRow(name, nameKey(name)) == name
    assert nameKey("[1,2]") != nameKey((1, 2))
    assert nameText("a\x00") == '"a\\u0000"'


def test_sorted() -> None:
    """
    Keys with an order of their own keep it; a mix is sorted by canonical
    form, the same whatever the input order.
    """
    assert sortedKeys(["b", "a"]) == ["a", "b"]
    assert sortedKeys([10, 9, 1.5]) == [1.5, 9, 10]
    mixed: list[Any] = [None, "a", 1, (1,), b"x", frozenset({2}), frozenset({1})]
    assert sortedKeys(mixed) == sortedKeys(reversed(mixed))


@pytest.mark.parametrize("text", ["{}", '{"other": 1}'])
def test_notAKey(text: str) -> None:
    """
    Text that is no key's stored form is refused.
    """
    with pytest.raises(ValueError, match="not a stored key"):
        decodeKey(text)
