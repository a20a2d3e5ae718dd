"""Skewed-key benchmark: 'key\\tvalue' lines."""


def key_value(line, auxiliary_data):
    key, _, value = line.partition("\t")
    return [(key, int(value))]
