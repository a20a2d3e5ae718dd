"""One server's data path: input planning, reading and decoding, map, shuffle, sort, reduce.

No network, no processes, and nothing of the rooms above it."""
