"""Every error the system raises, under one base class.

Messages say what went wrong, where, and what to do about it, so that a user
never has to read the code to find out why a job failed.
"""
from __future__ import annotations

from typing import Any


class ClusterError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ClusterError):
    """The cluster configuration is unreadable, incomplete or inconsistent."""


class MissingExtra(ConfigError):
    """A feature's packages are not installed on this machine (an extra of the distribution)."""

    def __init__(self, feature: str, extra: str, missing: str):
        self.extra = extra
        super().__init__(f"{feature} needs the {extra!r} extra, which is not installed here (no module {missing!r}): "
                         f"pip install 'mapreduce-cluster[{extra}]' (in a clone: EXTRAS={extra} init/install.sh)")


class JobSpecError(ClusterError):
    """A job dict is malformed; `problems` lists every problem found."""

    def __init__(self, problems: list[str], job_name: str | None = None):
        self.problems = list(problems)
        self.job_name = job_name
        where = f"job {job_name!r}" if job_name else "the job"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where} is not valid ({len(self.problems)} problem(s)):\n{lines}")


class ProjectError(ClusterError):
    """A project, or a function in it, could not be found or loaded."""


class InputError(ClusterError):
    """An input file or directory of a job cannot be used."""


class BadRecord(ClusterError):
    """Raised by a map function to count the current line as bad instead of failing the job."""


class CodecError(ClusterError):
    """A value cannot be carried between phases by the intermediate codec."""


class OutputError(ClusterError):
    """Reduce output could not be written (a value that is not JSON, a full disk...)."""


_NO_KEY = object()


class WaitTimedOut(ClusterError):
    """What `timing.wait_until` waited for did not happen in time (the caller usually says more)."""


class ShuffleError(ClusterError):
    """A spill file could not be written or handed over (disk full, permissions...)."""


class BadMapOutput(ClusterError):
    """Internal: a map call returned something that is not (key, value) pairs with hashable keys;
    the mapper turns it into a UserFunctionError naming the file and line."""


class NotTheInput(ClusterError):
    """Internal: carries an OSError or RuntimeError raised while the mapper flushed or reported past
    the handler that takes codec errors for a broken input file; the mapper raises the error itself."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class OrderConflict(ClusterError):
    """Internal: runs sorted in their natural order turned out not to be comparable with each other;
    the reducer merges again in the universal order."""


class RemoteCommandError(ClusterError):
    """A command or a copy on a location failed or timed out; says host, command, exit code and stderr."""


class RedisServerError(ClusterError):
    """A location's redis-server could not be started, reached or stopped."""


class UserFunctionError(ClusterError):
    """A map, combine or reduce function raised; says where, with the original traceback."""

    def __init__(self, *, function: str, phase: str, server: str | None, error: str,
                 traceback: str, input_file: str | None = None, line_number: int | None = None,
                 line: str | None = None, key: object = _NO_KEY):
        self.function = function
        self.phase = phase
        self.server = server
        self.error = error
        self.traceback = traceback
        self.input_file = input_file
        self.line_number = line_number
        self.line = line
        self.has_key = key is not _NO_KEY
        self.key = key if self.has_key else None
        where = [f"phase {phase}"]
        if server:
            where.insert(0, f"server {server}")
        if input_file:
            where.append(f"file {input_file}" + (f" line {line_number}" if line_number else ""))
        if self.has_key:
            where.append(f"key {key!r:.200}")
        msg = f"{function} raised {error} ({', '.join(where)})"
        if line is not None:
            msg += f"\n  input line: {line[:200]!r}"
        msg += "\n" + traceback.rstrip()
        super().__init__(msg)


class JobFailed(ClusterError):
    """A job did not finish; carries the server, phase and the underlying report."""

    report: dict[str, Any]  # a worker's error report, where there is one (set by local.failure_from_report)

    def __init__(self, job_name: str, message: str, *, server: str | None = None,
                 phase: str | None = None):
        self.job_name = job_name
        self.server = server
        self.phase = phase
        where = ", ".join(x for x in (f"server {server}" if server else "",
                                      f"phase {phase}" if phase else "") if x)
        super().__init__(f"job {job_name!r} failed" + (f" ({where})" if where else "") + f": {message}")


class JobAborted(ClusterError):
    """A server stopped its part of a run because the master aborted the run."""


class ClusterNotRunning(ClusterError):
    """The cluster, or some of its servers, are not running; `manage_cluster start` fixes it."""


class ClusterBusy(ClusterError):
    """Another run has the cluster's servers; this one was refused at once (never preempted)."""


class DeployError(ClusterError):
    """A location cannot run this cluster's code (missing interpreter, other Python, missing packages)."""


class JobTimedOut(JobFailed):
    """A job ran past its `timeout_minutes` and was stopped."""

    def __init__(self, job_name: str, minutes: float, *, phase: str | None = None, what: str = ""):
        self.minutes = minutes
        super().__init__(job_name, f"ran past its timeout of {minutes:g} minute(s) and was stopped{what}; "
                         "raise timeout_minutes if the job needs longer", phase=phase)


class JobCancelled(JobFailed):
    """A run was cancelled (`mapreduce cancel`, the dashboard's Stop button) and stopped everywhere."""

    def __init__(self, job_name: str, reason: str, *, phase: str | None = None, what: str = ""):
        self.reason = reason
        ClusterError.__init__(self, f"job {job_name!r} was cancelled ({reason}){what}")
        self.job_name, self.server, self.phase = job_name, None, phase


class ScriptFailed(JobFailed):
    """A script job's command exited with an error (the message ends with its log's last lines)."""


class TransferError(ClusterError):
    """A file transfer could not be done (missing folder, checksum mismatch, name clash...)."""


class PublishError(ClusterError):
    """A script job's output folder could not be published (local folder or S3)."""


class RunnerBusy(ClusterError):
    """Another Runner already works this queue (one Runner per local_working_dir)."""


class FilterError(ClusterError):
    """A dimensions filter is malformed, or the data dir it selects from cannot be listed."""


class JobScriptError(ClusterError):
    """A Telemetry-style job script cannot be loaded, or broke its contract (map/combine/reduce)."""


class NotSerializable(ClusterError, ValueError):
    """A job script wrote a key or value that marshal cannot carry between phases (a ValueError, as
    marshal's own: in map it makes the line a bad line, as in the original job.py)."""


class UnhashableKey(ClusterError, TypeError):
    """A job script wrote a key that cannot be a key (a list, a dict): fails the job, as in the original."""


class RemoteDataError(ClusterError):
    """Input data could not be listed in, or fetched from, an S3-compatible store."""


class FailedFile(InputError):
    """An input file that cannot be decoded (binary, truncated, a codec that fails): named, with the reason."""

    def __init__(self, path: str, reason: str, after_line: int = 0):
        self.path = path
        self.reason = reason
        self.after_line = after_line
        super().__init__(f"{path}: {reason}")


class TaskFailed(ClusterError):
    """A Dask task of a run failed in a way the client learns of only from another task (its message
    says which task and why); raised on a worker, so it keeps to a message (it crosses a pickle)."""
