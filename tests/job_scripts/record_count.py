"""How many documents (the README's first example)."""


def map(key, dimensions, value, map_context):
    map_context.write("record_count", 1)


def reduce(key, values, reduce_context):
    reduce_context.write(key, sum(values))


combine = reduce
