"""A map-only job: one record per document, its id and the channel from the file's dimensions."""


def map(key, dimensions, value, map_context):
    map_context.write(key, dimensions[2])
