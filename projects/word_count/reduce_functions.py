"""Word count: the sum of a word's counts. Also a valid combiner (a sum is associative)."""
from operator import itemgetter

_value = itemgetter(1)


def sum_counts(group, auxiliary_data):
    # works for a list and for a disk-backed group (disk_based_input); sum(map(...)) runs in C
    items = iter(group)
    key, total = next(items)
    return [(key, total + sum(map(_value, items)))]
