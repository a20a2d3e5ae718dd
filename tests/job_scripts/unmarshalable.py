"""Writes a value marshal cannot carry (a Decimal) for the third document of each file."""
import decimal

seen = {}


def map(key, dimensions, value, map_context):
    n = seen[tuple(dimensions)] = seen.get(tuple(dimensions), 0) + 1
    map_context.write("x", decimal.Decimal("1.5") if n == 3 else 1)


def reduce(key, values, reduce_context):
    reduce_context.write(key, len(values))
