"""Progress bars per phase (files, records, bytes) and the end-of-job counters table."""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.counters import worst_files

if TYPE_CHECKING:
    from tqdm import tqdm


def human_size(n: float | None) -> str:
    """1536 -> '1.5 KB' (None -> '-')."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MB"


PHASES = ("map", "sort", "reduce")


@dataclass(frozen=True)
class PhaseProgress:
    """How far one server is in one phase: pending, running (with a fraction when the total is
    known, never 1.0 before the server reported the phase done) or done."""

    phase: str
    state: str  # "pending", "running", "done"
    fraction: float | None
    detail: str

    @property
    def percent(self) -> int | None:
        return None if self.fraction is None else int(self.fraction * 100)


def _phase_detail(phase: str, c: dict[str, Any]) -> str:
    if phase == "map":
        text = f"files {c.get('files_done', 0)}/{c.get('files', 0)}, records {c.get('records_in', 0):,}"
        if c.get("input_bytes_total"):
            text += f", {human_size(c.get('input_bytes_done', 0))} of {human_size(c['input_bytes_total'])}"
        return text
    if phase == "sort":
        return f"runs {c.get('runs_in', 0):,}"
    return f"groups {c.get('groups', 0):,}, records out {c.get('records_out', 0):,}"


def phase_progress(phase: str, counters: dict[str, Any] | None, current: str | None) -> PhaseProgress:
    """`phase` of a server whose latest counters (of phase `current`) are `counters`."""
    if current not in PHASES or PHASES.index(phase) > PHASES.index(current):
        return PhaseProgress(phase, "pending", 0.0, "")
    if PHASES.index(phase) < PHASES.index(current):
        return PhaseProgress(phase, "done", 1.0, "")
    c = counters or {}
    detail = _phase_detail(phase, c)
    if "seconds" in c:  # the server reported the phase done
        return PhaseProgress(phase, "done", 1.0, f"{detail}, {c['seconds']:.1f}s")
    fraction = None
    if phase == "map":
        if c.get("input_bytes_total"):
            fraction = c.get("input_bytes_done", 0) / c["input_bytes_total"]
        elif c.get("files"):
            fraction = c.get("files_done", 0) / c["files"]
    return PhaseProgress(phase, "running", None if fraction is None else min(fraction, 0.99), detail)


def server_progress(current: str | None, counters: dict[str, Any] | None) -> list[PhaseProgress]:
    """Every phase of one server, from the counters of the phase it is in."""
    return [phase_progress(p, counters, current) for p in PHASES]


class PhaseBars:
    """One tqdm bar per phase, fed with every server's counters."""

    def __init__(self, enabled: bool | None = None):
        self.disable = (not sys.stderr.isatty()) if enabled is None else not enabled
        self.bar: tqdm | None = None
        self.phase: str | None = None

    def update(self, phase: str, per_server: dict[str, dict[str, Any]]) -> None:
        if self.disable:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            from tqdm import tqdm  # only a terminal that shows bars pays for the import

            unit = {"map": "B", "sort": "run", "reduce": "item"}[phase]
            self.bar = tqdm(desc=f"{phase:>6}", unit=unit, unit_scale=True, leave=True, file=sys.stderr,
                            dynamic_ncols=True)
        c = [x for x in per_server.values() if x]
        if phase == "map":
            total = sum(x.get("input_bytes_total", 0) for x in c)
            done = sum(x.get("input_bytes_done", 0) for x in c)
            post = (f"files {sum(x.get('files_done', 0) for x in c)}/{sum(x.get('files', 0) for x in c)}, "
                    f"records {sum(x.get('records_in', 0) for x in c):,}, spilled "
                    f"{_mb(sum(x.get('spilled_bytes', 0) for x in c))}")
        elif phase == "sort":
            total = done = sum(x.get("runs_in", 0) for x in c)
            post = f"servers done {sum(1 for x in c if 'seconds' in x)}/{len(per_server)}"
        else:
            total = None
            done = sum(x.get("items_reduced", 0) for x in c)
            post = f"groups {sum(x.get('groups', 0) for x in c):,}, out {sum(x.get('records_out', 0) for x in c):,}"
        assert self.bar is not None  # made above when the phase changed
        self.bar.total = total
        self.bar.n = min(done, total) if total else done
        self.bar.set_postfix_str(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _peaks(rss: dict[str, float]) -> str:
    """Each server's peak memory; past 8 of them (a Dask run's tasks), the largest and the median."""
    if len(rss) <= 8:
        return ", ".join(f"{s} {_mb(v)}" for s, v in sorted(rss.items()))
    top = max(rss, key=lambda s: rss[s])
    return f"largest {top} {_mb(rss[top])}, median {_mb(statistics.median(rss.values()))} over {len(rss)} tasks"


def format_counters(result: Any) -> str:
    """A few lines a person reads after a job: output, records, bytes, time per phase, memory."""
    c = result.counters
    sec = c.get("seconds", {})
    rss = c.get("peak_rss_bytes", {})
    lines = [
        f"job {result.job_name} succeeded (run {result.run_id})",
        f"  output:        {result.output_dir} ({c['output_files']} files, {_mb(c['output_bytes'])})",
        f"  input:         {c['files']} files, {c['records_in']:,} records, {_mb(c['bytes_in'])}",
        f"  bad lines:     {c['bad_lines']:,}"
        + (f"  e.g. {c['bad_line_examples'][0]}" if c["bad_line_examples"] else ""),
        f"  map output:    {c['map_items_out']:,} items"
        + (f", combined {c['combine_items_in']:,} -> {c['combine_items_out']:,}" if c["combine_calls"] else ""),
        f"  shuffled:      {c['spilled_items']:,} items, {_mb(c['spilled_bytes'])} in {c['spill_files']} files",
        f"  reduce:        {c['groups']:,} groups -> {c['records_out']:,} records"
        + (f" ({c['groups_on_disk']:,} groups read from disk)" if c.get("groups_on_disk") else ""),
        "  seconds:       " + ", ".join(f"{k} {v:.2f}" for k, v in sec.items()),
        "  peak memory:   " + _peaks(rss),
    ]
    by_file = worst_files(c.get("bad_lines_by_file") or {})
    if by_file:
        lines.append("  bad lines by file:")
        lines += [f"    {n:>10,}  {path}" for path, n in by_file[:10]]
        if len(by_file) > 10:
            lines.append(f"    {sum(n for _, n in by_file[10:]):>10,}  in {len(by_file) - 10} more files")
    for r in c.get("retried_tasks") or []:
        lines.append(f"  retried:       {r['server']} {r['phase']} (attempt {r['attempt']}): {r['reason'][:160]}")
    if c.get("locked_files_skipped"):
        lines.append(f"  skipped (locked, still being written): {len(c['locked_files_skipped'])} files")
    if c.get("files_already_mapped"):
        lines.append(f"  skipped (hold_state, mapped before): {c['files_already_mapped']} files")
    return "\n".join(lines)
