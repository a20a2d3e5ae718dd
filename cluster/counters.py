"""Every counter a run reports, named once: the phase that counts it, how the servers' values
merge into the job's, and what it means. The engine's phases count them under these names (a test
checks that no other name is counted), the executors merge them by `how`, the summaries and the
dashboard show them."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Merge(StrEnum):
    """How the servers' values of a counter become the job's."""

    SUM = "sum"                # added up
    PER_SERVER = "per_server"  # kept per server (the largest value of its phases)
    LIST = "list"              # the servers' lists, one after another
    SUM_BY_KEY = "sum_by_key"  # a dict of counts, added up key by key
    LOCAL = "local"            # only meaningful on its server (merged nowhere)


@dataclass(frozen=True)
class Counter:
    name: str
    phase: str  # map, sort, reduce, or any
    how: Merge
    meaning: str


COUNTERS: tuple[Counter, ...] = (
    # map: reading the input
    Counter("files", "map", Merge.SUM, "input files planned for the server"),
    Counter("files_done", "map", Merge.SUM, "input files finished"),
    Counter("files_decompressed", "map", Merge.SUM, "input files that were compressed"),
    Counter("files_failed", "map", Merge.SUM, "input files that could not be decoded (they fail the job)"),
    Counter("failed_files", "map", Merge.LIST, "each failed file: {path, reason}"),
    Counter("records_in", "map", Merge.SUM, "input lines read (sampled-out lines not included)"),
    Counter("records_sampled_out", "map", Merge.SUM, "input lines downsample skipped"),
    Counter("bytes_in", "map", Merge.SUM, "decoded input bytes read"),
    Counter("input_bytes_total", "map", Merge.SUM, "input bytes on disk, planned"),
    Counter("input_bytes_done", "map", Merge.SUM, "input bytes on disk, done (the map progress)"),
    Counter("bad_lines", "map", Merge.SUM, "bad records: not UTF-8, or the map function raised BadRecord"),
    Counter("bad_lines_by_file", "map", Merge.SUM_BY_KEY, "bad records per input file"),
    Counter("bad_line_examples", "map", Merge.LIST, "the first bad records, file:line: reason"),
    # map: the shuffle
    Counter("map_items_out", "map", Merge.SUM, "items the map function returned"),
    Counter("combine_calls", "map", Merge.SUM, "calls of the combiner"),
    Counter("combine_items_in", "map", Merge.SUM, "items into the combiner"),
    Counter("combine_items_out", "map", Merge.SUM, "items out of the combiner"),
    Counter("spills", "map", Merge.SUM, "times the shuffler emptied its buffer into runs"),
    Counter("spill_files", "map", Merge.SUM, "sorted runs written for the reducers"),
    Counter("spilled_items", "map", Merge.SUM, "items in those runs"),
    Counter("spilled_bytes", "map", Merge.SUM, "bytes of those runs"),
    Counter("moved_bytes", "map", Merge.SUM, "bytes sent to other servers"),
    Counter("received_files", "map", Merge.SUM, "runs received from other servers (the cluster)"),
    Counter("received_bytes", "map", Merge.SUM, "bytes received from other servers (the cluster)"),
    # sort and reduce
    Counter("runs_in", "sort", Merge.SUM, "sorted runs a reducer merges"),
    Counter("spill_files_dropped", "sort", Merge.SUM, "runs of map attempts that do not count, removed (the cluster)"),
    Counter("merge_passes", "sort", Merge.PER_SERVER, "merge passes before the final merge"),
    Counter("runs_spilled", "sort", Merge.LOCAL, "runs a DiskSort wrote itself"),
    Counter("items_sorted", "sort", Merge.LOCAL, "items a DiskSort yielded"),
    Counter("groups", "reduce", Merge.SUM, "key groups reduced"),
    Counter("items_reduced", "reduce", Merge.SUM, "items in those groups"),
    Counter("groups_on_disk", "reduce", Merge.SUM, "groups read from disk (too big for memory, or disk_based_input)"),
    Counter("largest_group", "reduce", Merge.PER_SERVER, "items in the server's largest group"),
    Counter("order_fallbacks", "reduce", Merge.PER_SERVER, "merges redone in the universal key order"),
    Counter("records_out", "reduce", Merge.SUM, "output items written"),
    Counter("output_files", "reduce", Merge.SUM, "output files written"),
    Counter("output_bytes", "reduce", Merge.SUM, "output bytes written"),
    # every phase
    Counter("seconds", "any", Merge.LOCAL, "the phase's time (the job's: per phase, by the executor)"),
    Counter("peak_rss_bytes", "any", Merge.PER_SERVER, "the server's peak resident memory"),
    Counter("retried_tasks", "any", Merge.LOCAL, "the job's tasks that ran again (a server died, or met an "
            "infrastructure error): server, phase, attempt, reason (by the executor)"),
)
BY_NAME = {c.name: c for c in COUNTERS}


def names(how: Merge, phase: str | None = None) -> tuple[str, ...]:
    """The counters merged `how` (of `phase`, when given)."""
    return tuple(c.name for c in COUNTERS if c.how is how and (phase is None or c.phase == phase))


def worst_files(by_file: dict[str, int]) -> list[tuple[str, int]]:
    """`bad_lines_by_file` as (path, count), the most bad records first (then by path)."""
    return sorted(by_file.items(), key=lambda kv: (-kv[1], kv[0]))
