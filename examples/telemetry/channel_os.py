"""Documents per (channel, OS): a Telemetry-style job script (python -m cluster.job --help)."""
import json


def map(key, dimensions, value, map_context):
    # key: the document id; dimensions: the file's [reason, appName, channel, version, build, date];
    # value: the raw JSON text. JSON that does not parse raises ValueError: a bad line, counted.
    info = json.loads(value)["info"]
    map_context.write((info["appUpdateChannel"], info["OS"]), 1)


def reduce(key, values, reduce_context):
    reduce_context.write("|".join(key), sum(values))


def combine(key, values, context):
    # a partial reduce: called when a key holds more than --combine-threshold values in a mapper
    context.write(key, sum(values))
