"""Estimates of the memory Python objects take, for the memory budget and batch sizes."""
from __future__ import annotations

import sys
from typing import Any

from cluster import defaults


def deep_size(obj: Any, depth: int = 3) -> int:
    """Approximate bytes an object holds, following containers a few levels down."""
    size = sys.getsizeof(obj)
    if depth and isinstance(obj, (tuple, list, set, frozenset)):
        size += sum(deep_size(x, depth - 1) for x in obj)
    elif depth and isinstance(obj, dict):
        size += sum(deep_size(k, depth - 1) + deep_size(v, depth - 1) for k, v in obj.items())
    return size


def spread_sample(items: list, sample_size: int = defaults.SIZE_SAMPLE_ITEMS) -> list:
    """At most `sample_size` items, spread evenly over the list."""
    return items[::max(1, len(items) // sample_size)][:sample_size]


def estimate_item_bytes(items: list, sample_size: int = defaults.SIZE_SAMPLE_ITEMS) -> float:
    """Average in-memory bytes of an item (plus its list slot), from a sample spread over the list."""
    if not items:
        return 64.0
    sample = spread_sample(items, sample_size)
    return 8 + sum(map(deep_size, sample)) / len(sample)


def batch_items_for(item_bytes: float) -> int:
    """How many items of this size make one batch: at most BATCH_ITEMS, at most BATCH_BYTES."""
    return int(max(1, min(defaults.BATCH_ITEMS, defaults.BATCH_BYTES // max(1.0, item_bytes))))


def held_value_bytes(value: Any) -> int:
    """Bytes one more reference to `value` costs where it is held: nothing beyond the slot for the
    objects Python shares (None, booleans, small ints), its size for the others."""
    if value is None or type(value) is bool or (type(value) is int and -5 <= value <= 256):
        return 0
    return deep_size(value)


SLOT_BYTES = 9.0  # a list's slot for one more value, with the spare room a growing list keeps (1/8)


def estimate_value_bytes(values: list, sample_size: int = defaults.SIZE_SAMPLE_ITEMS) -> float:
    """Average bytes a value takes in a list of values (its slot, and the value unless shared)."""
    if not values:
        return SLOT_BYTES
    sample = spread_sample(values, sample_size)
    return SLOT_BYTES + sum(map(held_value_bytes, sample)) / len(sample)

