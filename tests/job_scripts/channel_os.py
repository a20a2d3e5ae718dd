"""Documents per (channel, OS), with a combiner."""
import json


def map(key, dimensions, value, map_context):
    info = json.loads(value)["info"]
    map_context.write((info["appUpdateChannel"], info["OS"]), 1)


def reduce(key, values, reduce_context):
    reduce_context.write("|".join(key), sum(values))


def combine(key, values, context):
    context.write(key, sum(values))
