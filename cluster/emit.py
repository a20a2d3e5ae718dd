"""Cheaper ways for a map function to emit many items.

`with_value(keys, value)` is an iterable of `(key, value)` for every key, so it
can stand wherever a map function returns items; the shuffler recognises it and
handles the keys directly, without building one tuple per key:

    from cluster.emit import with_value

    def word_count(line, auxiliary_data):
        return with_value(line.split(), 1)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Any


class SameValue:
    """Map output: every key of `keys` paired with the one `value`."""

    __slots__ = ("keys", "value")

    def __init__(self, keys: Iterable, value: Any):
        self.keys = keys
        self.value = value

    def __iter__(self) -> Iterator[tuple]:
        return zip(self.keys, repeat(self.value))

    def __repr__(self) -> str:
        return f"with_value({self.keys!r:.100}, {self.value!r})"


with_value = SameValue
"""`with_value(keys, value)`: the items `(key, value)` for every key, emitted cheaply."""
