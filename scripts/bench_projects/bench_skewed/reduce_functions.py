"""Skewed-key benchmark: a sum that streams its group (a disk-backed iterable under disk_based_input)."""


def sum_group(group, auxiliary_data):
    items = iter(group)
    key, total = next(items)
    for _, value in items:
        total += value
    return [(key, total)]
