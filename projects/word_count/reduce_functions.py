"""Word count: the sum of a word's counts. Also a valid combiner."""


def sum_counts(group, auxiliary_data):
    return [(group[0][0], sum(value for _, value in group))]
