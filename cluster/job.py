"""`python -m cluster.job`: the name Telemetry-style job scripts were run by; the same as
`python -m cluster.telemetry` (cluster/telemetry/script.py)."""
from __future__ import annotations

import sys

from cluster.telemetry.script import main

if __name__ == "__main__":
    main(sys.argv[1:], prog_name="python -m cluster.job")
