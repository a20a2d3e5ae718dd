"""Telemetry aggregation: sum the values of each key. Also a valid combiner."""


def sum_values(group, auxiliary_data):
    return [(group[0][0], sum(value for _, value in group))]
