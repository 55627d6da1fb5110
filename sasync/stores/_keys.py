"""
How the stores write a hashable key (an ID, a name, an array coordinate)
so that equal keys meet again after a restart.

Python's C{hash()} of a str changes from one process to the next, so it
cannot name a stored key. Instead a key is written as text, in one of two
forms:

  - the I{canonical} form, the same for every two keys that are equal in
    Python (C{1}, C{1.0} and C{True} are one key, as in a C{dict};
    C{(1, 2.0)} and C{(1.0, 2)} too): what the stores digest to find a row;
  - the I{typed} form, which gives the key back as it was written
    (C{True} stays C{True}): what the stores keep beside the digest, so
    that C{keys()} returns your keys.

Both are JSON text (ASCII only, so any database's text column holds it):
C{null}, C{true}/C{false}, numbers, strings, arrays for tuples, and
C{{"bytes": "<hex>"}} and C{{"frozenset": [...]}}, whose elements are
sorted by their own text. In the canonical form a bool or a float with an
integral value is written as the int it equals.

Supported: C{None}, C{bool}, C{int}, C{float} (not NaN, which equals
nothing, not even itself), C{str}, C{bytes}, and C{tuple} and C{frozenset}
of supported keys. Other hashable objects have no encoding that is both
stable and true to their C{==}, and are refused with C{TypeError}.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from typing import Any, Final

SUPPORTED: Final = (
    "None, bool, int, float, str, bytes, or a tuple or frozenset of those"
)
"""
The kinds of key the stores keep, for error messages.
"""


def _unsupported(key: object, part: object) -> TypeError:
    try:
        hash(part)
    except TypeError:
        what = "is unhashable"
    else:
        what = "has no stable stored form"
    inside = "" if part is key else f" (its part {part!r})"
    return TypeError(
        f"key {key!r}{inside}: a {type(part).__name__} {what}; keys are {SUPPORTED}"
    )


def _encode(key: object, part: object, canonical: bool) -> str:
    if part is None:
        return "null"
    if isinstance(part, bool):
        if canonical:
            return "1" if part else "0"
        return "true" if part else "false"
    if isinstance(part, int):
        # (int.__repr__: an IntEnum's own repr is its name.)
        return int.__repr__(part)
    if isinstance(part, float):
        if part != part:
            raise ValueError(f"key {key!r}: NaN equals nothing, not even itself")
        if canonical and part.is_integer():
            return int.__repr__(int(part))
        return json.dumps(float(part))
    if isinstance(part, str):
        return json.dumps(str.__str__(part))
    if isinstance(part, bytes):
        return '{"bytes":"' + bytes(part).hex() + '"}'
    if isinstance(part, tuple):
        return "[" + ",".join(_encode(key, p, canonical) for p in part) + "]"
    if isinstance(part, frozenset):
        inner = sorted(_encode(key, p, canonical) for p in part)
        return '{"frozenset":[' + ",".join(inner) + "]}"
    raise _unsupported(key, part)


def canonicalText(key: object) -> str:
    """
    @return: the canonical form of C{key}: equal keys, equal text.
    @raise TypeError: C{key} is not one of L{SUPPORTED} (the message names
        it, and the part at fault).
    @raise ValueError: C{key} is or holds a NaN.
    """
    return _encode(key, key, canonical=True)


def typedText(key: object) -> str:
    """
    @return: the typed form of C{key}, which L{decodeKey} turns back into
        an equal key of the same types.
    @raise TypeError: as for L{canonicalText}.
    """
    return _encode(key, key, canonical=False)


def canonicalInt(key: object) -> int | None:
    """
    @return: the int C{key} equals, if it is a bool, an int or a float with
        an integral value; else C{None}.
    """
    if isinstance(key, int):
        return int(key)
    if isinstance(key, float) and key.is_integer():
        return int(key)
    return None


def decodeKey(text: str) -> Hashable:
    """
    @return: the key whose typed (or canonical) form is C{text}.
    @raise ValueError: C{text} is not such a form.
    """
    return _rebuild(json.loads(text))


#: How a typed form begins, but for the whole words below.
_TYPED_STARTS: Final = frozenset('"[{-0123456789')
_TYPED_WORDS: Final = frozenset({"null", "true", "false", "Infinity"})


def mayBeTyped(text: str) -> bool:
    """
    @return: whether C{text} could be a typed form (C{False} for most
        names: those that begin with a letter, but a few words).
    """
    return text[:1] in _TYPED_STARTS or text in _TYPED_WORDS


def _rebuild(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_rebuild(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"bytes"}:
            return bytes.fromhex(value["bytes"])
        if set(value) == {"frozenset"}:
            return frozenset(_rebuild(v) for v in value["frozenset"])
        raise ValueError(f"not a stored key: {value!r}")
    result: Hashable = value
    return result


def sortedKeys(keys: Iterable[Hashable]) -> list[Any]:
    """
    @return: C{keys} sorted: in their own order where they have a total
        one (all str, all numbers, tuples of those...), else by their
        canonical form.
    """
    keys = list(keys)
    if not any(_holdsSet(k) for k in keys):
        try:
            return sorted(keys)
        except TypeError:
            pass
    return sorted(keys, key=canonicalText)


def _holdsSet(key: object) -> bool:
    # A frozenset's < is "subset of": no total order.
    if isinstance(key, frozenset):
        return True
    return isinstance(key, tuple) and any(_holdsSet(k) for k in key)


__all__ = [
    "SUPPORTED",
    "canonicalInt",
    "canonicalText",
    "decodeKey",
    "mayBeTyped",
    "sortedKeys",
    "typedText",
]
