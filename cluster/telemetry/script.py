"""Run a Telemetry-style job script over the slice of partitioned data a filter names.

    python -m cluster.job SCRIPT --input-filter FILTER.json --data-dir DIR --work-dir WORK --output OUT

on this machine (worker processes, no servers), or with --cluster on the running cluster.
The script defines map(key, dimensions, value, map_context) and optionally reduce,
combine and setup_reduce (see adapters.py); the output is one text file. `--help`
says the rest.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import click

import cluster
from cluster import defaults, job_spec
from cluster.api import make_executor
from cluster.config import ClusterConfig
from cluster.counters import worst_files
from cluster.engine import functions
from cluster.engine.partitions import DimensionsFilter, select_local_files
from cluster.exceptions import ClusterError, JobScriptError
from cluster.executors.base import JobResult
from cluster.job_spec import is_valid_name
from cluster.layout import JobLayout
from cluster.master.s3 import s3_client
from cluster.progress import PhaseBars
from cluster.telemetry.adapters import RESERVED_MODULES, JobScript, write_project
from cluster.telemetry.remote_data import RemoteData

log = logging.getLogger("cluster.job")  # the same name under `python -m`
PROJECTS = "projects"
CACHE = "cache"
DEFAULT_WORK_DIR = "/tmp/telemetry_mr"  # the original job.py's default


@dataclass
class ScriptRun:
    """What one job script run needs to know, from the command line."""

    script: str
    input_filter: str
    data_dir: str | None
    work_dir: str
    output: str
    num_mappers: int
    num_reducers: int
    local_only: bool = False
    bucket: str | None = None
    delete_data: bool = False
    profile: bool = False
    cluster: bool = False
    dask: str | None = None  # the Dask scheduler's address ("local": a LocalCluster for the run)
    combine_threshold: int = defaults.COMBINE_THRESHOLD
    max_bad_fraction: float = defaults.MAX_BAD_FRACTION
    aws_credentials: tuple[str, str] | None = None
    job_name: str | None = None
    config_path: str | None = None
    progress: bool | None = None
    worker_log_level: int = logging.WARNING
    failed_files: dict[str, str] = field(default_factory=dict)


def _name(text: str) -> str:
    """A job or module name from a file name: letters, digits and '_' only."""
    name = re.sub(r"\W", "_", text)
    return name if name[:1].isalpha() else "job_" + name


class JobScriptRunner:
    """Selects the input, runs the script on the engine, writes the output file, reports."""

    def __init__(self, run: ScriptRun) -> None:
        """Check everything that can be checked before any work: the filter, the names, the script
        (imported from its one-file project in WORK/projects), the output's folder."""
        self.run = run
        self.work_dir = os.path.abspath(run.work_dir)
        if not os.path.isfile(run.script) or not run.script.endswith(".py"):
            raise JobScriptError(f"job script {run.script} not found (it must be a Python file ending in .py)")
        self.module = _name(os.path.basename(run.script)[:-3])
        if self.module in RESERVED_MODULES:  # a script named map_functions.py: the stubs have that name
            self.module = "script_" + self.module
        self.job_name = run.job_name or self.module
        if not is_valid_name(self.job_name):
            raise JobScriptError(f"job name {self.job_name!r} must be letters, digits, '_', '.', '-' and start with "
                                 "a letter or digit (it names folders in WORK)")
        self.filter = DimensionsFilter.load(run.input_filter)
        self.output = os.path.abspath(run.output)
        _check_writable(os.path.dirname(self.output))
        os.makedirs(self.work_dir, exist_ok=True)
        self.config = self._config()
        self._install_script()
        self.script = JobScript(functions.load_module(self.config.projects_dir, self.job_name, self.module))

    def execute(self) -> int:
        """Run the job; return the exit status (0: every file mapped; 1: some file failed)."""
        r = self.run
        started = time.monotonic()
        data_dir = self._data_dir()
        job = self._job(data_dir)
        job = job_spec.validate_job(job)
        if not r.cluster:
            files = select_local_files(data_dir, self.filter)
            log.info("selected %d files (%.1f MB) under %s with %s", len(files), sum(s for _, s in files) / 1e6,
                     data_dir, r.input_filter)
        try:
            result = self._engine(job)
            self._write_output()
        finally:
            if not r.cluster:
                layout = JobLayout(self.config.base_dir, self.config.auxiliary_dir, self.job_name)
                shutil.rmtree(layout.output_dir, ignore_errors=True)  # the engine's copy of --output
        if not result.counters.get("files"):
            log.warning("no file matched: nothing under %s has the layout and values %s asks for; the output "
                        "is empty", data_dir if not r.cluster else f"{r.data_dir} on any location", r.input_filter)
        failed = self._report(result, time.monotonic() - started)
        if r.delete_data and not r.cluster and not failed:
            self._delete_cached(data_dir)
        return 1 if failed else 0

    # --- input -----------------------------------------------------------------------------
    def _data_dir(self) -> str:
        r = self.run
        if r.bucket is None:
            assert r.data_dir is not None  # main() requires --data-dir without --bucket
            return os.path.abspath(r.data_dir)
        cache = os.path.join(self.work_dir, CACHE)
        if r.data_dir:
            log.warning("--data-dir %s is not read with --bucket: the files come from s3://%s into %s",
                        r.data_dir, r.bucket, cache)
        os.makedirs(cache, exist_ok=True)
        if r.local_only:
            log.info("--local-only: using the files already in the cache %s (s3://%s is not contacted)",
                     cache, r.bucket)
            return cache
        remote = RemoteData(s3_client(self.config, retries=1, credentials=r.aws_credentials), r.bucket, cache,
                            list_client=s3_client(self.config, credentials=r.aws_credentials))
        objects = remote.list(self.filter)
        report = remote.fetch(objects)
        log.info("fetched %d files (%.1f MB), %d from the cache, %d retries, %d failed", report.fetched,
                 report.bytes / 1e6, report.cached, report.retries, len(report.failed))
        r.failed_files.update({remote.url(k): e for k, e in report.failed.items()})
        return cache

    def _delete_cached(self, cache: str) -> None:
        removed = 0
        for path, _ in select_local_files(cache, self.filter):
            os.unlink(path)
            removed += 1
        log.info("--delete-data: removed the %d files of this selection from the cache %s", removed, cache)

    # --- the job ---------------------------------------------------------------------------
    def _config(self) -> ClusterConfig:
        config = ClusterConfig.load(self.run.config_path)
        projects = os.path.join(self.work_dir, PROJECTS)
        os.makedirs(projects, exist_ok=True)
        if self.run.cluster:
            return config.with_overrides(projects_dir=projects)
        return config.with_overrides(projects_dir=projects, base_dir=os.path.join(self.work_dir, "jobs"),
                                     auxiliary_dir=os.path.join(self.work_dir, "auxiliary"))

    def _install_script(self) -> None:
        """Copy the script into a one-file project: what the workers (or the cluster's servers) import."""
        folder = os.path.join(self.config.projects_dir, self.job_name)
        if os.path.isdir(folder):
            shutil.rmtree(folder)  # a script of an earlier run, perhaps renamed since
        os.makedirs(folder)
        write_project(folder, self.run.script, self.module)

    def _job(self, data_dir: str) -> dict[str, Any]:
        r = self.run
        job = job_spec.get_mapreduce_job_template()
        combine = self.script.combine is not None and self.script.reduce is not None and r.combine_threshold > 0
        job.update(job_name=self.job_name, project_name=self.job_name, input_dirs=[data_dir],
                   map_function_name="map", reduce_function_name="reduce",
                   combine_function_name="combine" if combine else None, job_script=self.module + ".py",
                   input_filter=self.filter.spec, combine_threshold=r.combine_threshold or None,
                   delete_job_data=True, max_bad_fraction=r.max_bad_fraction)
        return job

    def _engine(self, job: dict) -> JobResult:
        """The job through its executor, recorded in the master's history (so `mapreduce cancel` stops it)."""
        from cluster.scheduling.store import Scheduler

        r = self.run
        bars = PhaseBars(enabled=r.progress)
        kind = "cluster" if r.cluster else "dask" if r.dask else "local"
        with Scheduler(self.config).recorded_run(job_spec.validate_job(job), source=f"job script ({kind})") as record:
            try:
                if r.cluster:
                    executor = make_executor("cluster", self.config, on_progress=bars.update)
                elif r.dask:
                    executor = make_executor("dask", self.config, on_progress=bars.update, address=r.dask)
                else:
                    executor = make_executor("local", self.config, servers=r.num_mappers, reducers=r.num_reducers,
                                             on_progress=bars.update, worker_log_level=r.worker_log_level,
                                             profile_dir=self.work_dir if r.profile else None)
                result = executor.run(job, cancelled=record.cancelled)
            finally:
                bars.close()
            record.counters = {"output_dir": result.output_dir, "mapreduce_run": result.run_id, **result.counters}
        return result

    # --- output ----------------------------------------------------------------------------
    def _write_output(self) -> None:
        """Concatenate the reducers' text files into --output (written aside, then renamed)."""
        out = self.output
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", dir=os.path.dirname(out))
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as a file the user created (mkstemp makes it 0600)
            with os.fdopen(fd, "wb") as sink, tempfile.TemporaryDirectory(prefix="cluster-job-") as scratch:
                if self.run.cluster:
                    from cluster.master.manager import ClusterManager

                    paths = ClusterManager(self.config).output_files(self.job_name, scratch)
                else:
                    paths = iter(JobLayout(self.config.base_dir, self.config.auxiliary_dir,
                                           self.job_name).output_files())
                for path in paths:
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, sink, 1 << 20)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _report(self, result: JobResult, seconds: float) -> bool:
        """Log what each mapper did and a summary; True when some file failed."""
        c = result.counters
        failed = dict(self.run.failed_files)
        for server, phases in sorted(result.per_server.items(), key=lambda kv: int(kv[0].split("_")[1])):
            m = phases.get("map", {})
            if not m.get("files"):
                continue
            log.info("mapper %s: %d files (%d decompressed, %d failed), %s rows mapped, %s bad lines, %.1f MB, "
                     "%.1fs", server, m.get("files", 0), m.get("files_decompressed", 0), m.get("files_failed", 0),
                     f"{m.get('records_in', 0) - m.get('bad_lines', 0):,}", f"{m.get('bad_lines', 0):,}",
                     m.get("bytes_in", 0) / 1e6, m.get("seconds", 0.0))
        for path, n in worst_files(c.get("bad_lines_by_file", {}))[:10]:
            log.info("bad lines: %s in %s", f"{n:,}", path)
        for example in c.get("bad_line_examples", [])[:10]:
            log.info("bad line: %s", example)
        log.info("job %s: %d files, %s rows read, %s bad lines, %s combine calls, %s records written to %s in %.1fs "
                 "(map %.1fs, sort %.1fs, reduce %.1fs)", self.job_name, c.get("files", 0),
                 f"{c.get('records_in', 0):,}", f"{c.get('bad_lines', 0):,}", f"{c.get('combine_calls', 0):,}",
                 f"{c.get('records_out', 0):,}", self.output, seconds, *(c.get("seconds", {}).get(p, 0.0)
                                                                              for p in ("map", "sort", "reduce")))
        for name, error in sorted(failed.items()):
            log.error("FAILED file %s: %s", name, error)
        if failed:
            log.error("%d file(s) could not be fetched; the output holds the other files' results (exit status 1)",
                      len(failed))
        return bool(failed)


def _check_writable(folder: str) -> None:
    """Fail before any work when the output cannot be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise JobScriptError(f"cannot write the output in {folder}: {exc.strerror or exc} (choose another "
                             "--output)") from None


def _inside(path: str | None, folder: str) -> bool:
    """True when `path` is `folder` or below it (links resolved)."""
    if not path:
        return False
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top + os.sep)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in (log.name, "cluster.telemetry.remote_data"):  # the steps of a run are always shown
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("script", type=click.Path(dir_okay=False))
@click.option("--input-filter", "-f", required=True, type=click.Path(dir_okay=False),
              help='JSON filter: {"version": 1, "dimensions": [{"field_name": ..., "allowed_values": '
                   '"*" | "value" | [values] | {"min": a, "max": b}}, ...]}, one entry per level of the layout.')
@click.option("--data-dir", "-d", type=click.Path(file_okay=False),
              help="The data, laid out as <dim1>/.../<dimN-2>/<dimN-1>.<dimN>.<anything> (required without "
                   "--bucket; with --cluster: the folder on every location).")
@click.option("--work-dir", "-w", default=DEFAULT_WORK_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Working folder: the job's files, the S3 cache (WORK/cache), profiles.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The output file: one record per reduce write (map writes for a map-only script).")
@click.option("--num-mappers", "-m", type=click.IntRange(1, 512), default=None,
              help="Map processes (default: this machine's CPU count). Files are split among them by size.")
@click.option("--num-reducers", "-r", type=click.IntRange(1, 512), default=1, show_default=True,
              help="Reduce processes; each writes its keys in ascending order.")
@click.option("--local-only", "-l", is_flag=True,
              help="Use only the files on disk: with --bucket, what is already in WORK/cache.")
@click.option("--bucket", "-b", default=None,
              help="Fetch the selected files from this S3 bucket (endpoint: s3_endpoint_url or AWS_ENDPOINT_URL; "
                   "credentials: the usual AWS variables) into WORK/cache, keeping the layout.")
@click.option("--aws-key", "-k", default=None, help="AWS access key id for --bucket (default: the usual AWS chain).")
@click.option("--aws-secret-key", "-s", default=None, help="AWS secret access key, with --aws-key.")
@click.option("--delete-data", "-X", is_flag=True,
              help="When the job succeeded, remove the selected files from the cache: WORK/cache with --bucket, or a "
                   "--data-dir inside WORK/cache (a --data-dir elsewhere is never deleted).")
@click.option("--max-bad-fraction", type=click.FloatRange(0, 1), default=defaults.MAX_BAD_FRACTION, show_default=True,
              help="Fail the job when more than this share of the records is bad (0: any bad record fails, "
                   "1: never). Bad: a line without a tab, not UTF-8, or whose map raises ValueError.")
@click.option("--combine-threshold", type=click.IntRange(0), default=defaults.COMBINE_THRESHOLD, show_default=True,
              help="Combine a key's values once a mapper holds more than this many (0: never combine).")
@click.option("--job-name", default=None, help="Name of the job (default: the script's file name).")
@click.option("--profile", "-p", is_flag=True, help="Write a cProfile file per mapper and reducer phase into WORK.")
@click.option("--verbose", "-v", is_flag=True, help="Log every file mapped and the engine's own steps.")
@click.option("--cluster", is_flag=True, help="Run on the running cluster; each location filters its own --data-dir.")
@click.option("--dask", metavar="ADDRESS", default=None,
              help="Run on the Dask cluster whose scheduler is at ADDRESS (or `local`: a LocalCluster for the run); "
                   "its workers must see --data-dir and WORK (the same machine, or a shared folder).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Cluster config (default: $CLUSTER_CONFIG, ~/.config/cluster/cluster.cfg, built-in defaults).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@click.version_option(cluster.__version__, "--version")
def main(script: str, input_filter: str, data_dir: str | None, work_dir: str, output: str, num_mappers: int | None,
         num_reducers: int, local_only: bool, bucket: str | None, aws_key: str | None, aws_secret_key: str | None,
         delete_data: bool, max_bad_fraction: float, combine_threshold: int, job_name: str | None, profile: bool,
         verbose: bool, cluster: bool, dask: str | None, config_path: str | None, progress: bool | None) -> None:
    """Run the Telemetry-style job SCRIPT over the files of --data-dir that --input-filter selects.

    \b
    SCRIPT defines (only map is required):
      def map(key, dimensions, value, map_context)   # key: text before the first tab,
          map_context.write(k, v)                    #   value: the rest (raw JSON text)
      def reduce(key, values, reduce_context)        # none: every map write is output
      def combine(key, values, context)              # partial reduce: one value for key
      def setup_reduce(reduce_context)               # e.g. reduce_context.field_separator = ","
    A line without a tab, not UTF-8, or whose map raises ValueError (bad JSON) is a bad
    line: counted per file and named; more than --max-bad-fraction of them fails the job.
    Files are opened by their content (gzip, bzip2, xz, .lzma, lz4, zstd or plain); one that
    cannot be decoded (binary, truncated, corrupt) fails the job, named with the reason.

    \b
    Exit status: 0 when every selected file was mapped; 1 when the job failed (the output file
    is then not written), or when some file could not be fetched from S3 (the output then holds
    the other files' results).
    """
    _setup_logging(verbose)
    ctx = click.get_current_context()
    if bucket is None and not data_dir:
        raise click.UsageError("--data-dir is required (or --bucket to fetch the data from S3)")
    if delete_data and bucket is None and not _inside(data_dir, os.path.join(work_dir, CACHE)):
        raise click.UsageError("--delete-data removes the selected files from the cache WORK/cache: it needs --bucket, "
                               "or a --data-dir inside WORK/cache (it never deletes other data)")
    if (aws_key is None) != (aws_secret_key is None):
        raise click.UsageError("--aws-key and --aws-secret-key go together")
    if cluster and dask:
        raise click.UsageError("--cluster and --dask exclude each other")
    if cluster:
        for flag, given in (("--bucket", bucket), ("--profile", profile), ("--num-mappers", num_mappers),
                            ("--num-reducers", num_reducers != 1)):
            if given:
                raise click.UsageError(f"{flag} does not go with --cluster: the cluster's servers map and reduce "
                                       "the files each location has in --data-dir")
    if dask:
        for flag, given in (("--profile", profile), ("--num-mappers", num_mappers),
                            ("--num-reducers", num_reducers != 1)):
            if given:
                raise click.UsageError(f"{flag} does not go with --dask: every Dask worker thread maps and reduces")
    run = ScriptRun(script=script, input_filter=input_filter, data_dir=data_dir, work_dir=work_dir, output=output,
                    num_mappers=num_mappers or os.cpu_count() or 1, num_reducers=num_reducers,
                    local_only=local_only, bucket=bucket, delete_data=delete_data, profile=profile, cluster=cluster,
                    dask=dask, combine_threshold=combine_threshold, job_name=job_name, config_path=config_path,
                    max_bad_fraction=max_bad_fraction,
                    aws_credentials=(aws_key, aws_secret_key) if aws_key and aws_secret_key else None,
                    progress=progress, worker_log_level=logging.INFO if verbose else logging.WARNING)
    try:
        status = JobScriptRunner(run).execute()
    except ClusterError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        ctx.exit(1)
    except OSError as exc:  # a full disk, a folder that vanished: say where, without a traceback
        click.secho(f"error: {exc}", fg="red", err=True)
        ctx.exit(1)
    ctx.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:], prog_name="python -m cluster.telemetry.script")
