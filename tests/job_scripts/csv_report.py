"""CSV output through setup_reduce: channel, documents, and a field that needs quoting."""
import json


def map(key, dimensions, value, map_context):
    map_context.write(json.loads(value)["info"]["appUpdateChannel"], 1)


def setup_reduce(reduce_context):
    reduce_context.field_separator = ","
    reduce_context.writecsv(["channel", "documents", "note"])  # a header, once (one reducer)


def reduce(key, values, reduce_context):
    reduce_context.writecsv([key, sum(values), f"{key}, all builds"])
