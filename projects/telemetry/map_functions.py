"""Telemetry aggregation over "<document id>\\t<json>" lines.

Per (channel, OS): how many documents; per channel: total uptime. Lines that are
not "<id>\\t<json>" or whose JSON does not parse are counted as bad lines.
"""
from json import loads

from cluster.exceptions import BadRecord


def channel_os(line, auxiliary_data):
    _, sep, payload = line.partition("\t")
    if not sep:
        raise BadRecord("no tab between document id and JSON")
    try:
        doc = loads(payload)
    except ValueError as exc:
        raise BadRecord(f"JSON does not parse: {exc}") from None
    info = doc["info"]
    channel = info["appUpdateChannel"]
    return ((("documents", channel, info["OS"]), 1),
            (("uptime", channel), doc["simpleMeasurements"]["uptime"]))
