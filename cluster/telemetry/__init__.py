"""Telemetry-style job scripts: `python -m cluster.telemetry SCRIPT ...` (`python -m cluster.job` too)."""
