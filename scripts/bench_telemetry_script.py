"""The telemetry aggregation as a job script, for scripts/bench (which writes a copy with json for
the json rows): documents per (channel, OS), uptime per channel; lines that are not JSON are bad."""
from orjson import loads


def map(key, dimensions, value, map_context):
    doc = loads(value)
    info = doc["info"]
    channel = info["appUpdateChannel"]
    map_context.write(("documents", channel, info["OS"]), 1)
    map_context.write(("uptime", channel), doc["simpleMeasurements"]["uptime"])


def reduce(key, values, reduce_context):
    reduce_context.write("|".join(key), sum(values))


def combine(key, values, context):
    context.write(key, sum(values))
