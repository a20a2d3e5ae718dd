"""Telemetry aggregation: sum the values of each key. Also a valid combiner."""
from operator import itemgetter

_value = itemgetter(1)


def sum_values(group, auxiliary_data):
    items = iter(group)
    key, total = next(items)
    return [(key, total + sum(map(_value, items)))]
