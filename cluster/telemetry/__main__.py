"""`python -m cluster.telemetry SCRIPT ...`: run a Telemetry-style job script (see script.py)."""
from __future__ import annotations

import sys

from cluster.telemetry.script import main

main(sys.argv[1:], prog_name="python -m cluster.telemetry")
