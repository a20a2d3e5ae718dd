"""Tunables and their defaults, in one place.

Configuration defaults describe a one-machine cluster on localhost; job defaults
fill in what a job dict leaves as None; engine tunables size batches and checks.
"""
from __future__ import annotations

import os

# --- configuration ([CLUSTER] section) -------------------------------------------------
_DATA_HOME = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
CONFIG_DEFAULTS: dict[str, object] = {
    "cluster_name": "cluster",
    "locations": "localhost",
    "number_of_servers_per_location": 2,
    "base_port": 45700,
    "management_port": 45699,
    "redis_port": 46379,
    "redis_auth": None,
    "compute_dir": os.path.join(_DATA_HOME, "cluster", "compute"),
    "base_dir": None,          # derived: <compute_dir>/data
    "working_dir": None,       # derived: <compute_dir>/working
    "logs_dir": None,          # derived: <compute_dir>/logs
    "auxiliary_dir": None,     # derived: <compute_dir>/auxiliary
    "code_dir": None,          # derived: <compute_dir>/code
    "base_projects_dir": None, # derived: <compute_dir>/projects
    "local_working_dir": os.path.join(_DATA_HOME, "cluster", "master"),
    "projects_dir": None,      # derived: ./projects
    "max_number_of_bytes_in_memory": 1024 ** 3,
    "poll_every": 1.0,
    "ssh_user": None,
    "ssh_key_file": None,
    "ssh_port": 22,
    "ssh_check_host_keys": "yes",  # no: accept unknown host keys (only on a network you trust)
    "python_executable": None,     # the interpreter on every location (default: the master's own)
    "publish_url": None,           # where script jobs publish output_dir: a folder or s3://bucket/prefix
    #                                (default: <local_working_dir>/published)
    "s3_endpoint_url": None,       # an S3-compatible store's URL (default: AWS); credentials: boto3's usual chain
    "dashboard_password": None,    # the web dashboard's login (or $CLUSTER_DASHBOARD_PASSWORD); master only
    "dask_scheduler": None,        # the Dask executor's scheduler, tcp://HOST:8786 or "local" (--dask overrides)
    "max_task_attempts": 4,        # the cluster runs a server's part of a phase this often at most, after the
    #                                server died or met an infrastructure error (1: never again)
}
CONFIG_ENV = "CLUSTER_CONFIG"
CONFIG_USER_PATH = os.path.join(os.path.expanduser("~"), ".config", "cluster", "cluster.cfg")
CONFIG_SECTION = "CLUSTER"

# --- job defaults for keys a job dict leaves as None -----------------------------------
MAX_NUMBER_DUMPED_ITEMS_SHUFFLER = 500_000
SIMULTANEOUS_FILES_IN_REDIS = 10
MAX_NUMBER_DUMPED_ITEMS_REDUCER = 500_000
MAX_BAD_FRACTION = 0.01  # more bad records than this share of the input fails a job
MAX_BAD_FILES_NAMED = 200  # files whose bad records a server counts one by one (the rest: one sum)

# --- engine tunables ------------------------------------------------------------------
BATCH_ITEMS = 2048             # items per codec batch in spill and run files, at most...
BATCH_BYTES = 4 * 1024 ** 2    # ...and at most this much memory per batch (big values: fewer items)
MAX_MERGE_FAN_IN = 64          # runs merged at once; more runs get an extra merge pass
MEMORY_CHECK_EVERY_LINES = 1024  # the mapper drains map output and checks memory this often (a power of 2;
#                                  small batches are grouped while still in the CPU cache: ~10% on telemetry)
MAX_PENDING_ITEMS = 1_000_000  # map output items waiting to be grouped, whatever the lines
PROGRESS_EVERY_SECONDS = 0.5   # how often a worker reports its counters
HEARTBEAT_TIMEOUT_SECONDS = 30.0  # a local worker silent for this long fails the phase
HEARTBEAT_EVERY_SECONDS = 1.0  # a cluster server writes its heartbeat key this often...
HEARTBEAT_TTL_SECONDS = 5      # ...with this time to live: a server silent this long counts as down
SERVER_START_TIMEOUT_SECONDS = 30.0  # `start` waits this long for each server to answer
STOP_TIMEOUT_SECONDS = 20.0    # `stop` waits this long for servers to exit before ending their sessions
MASTER_TTL_SECONDS = 15       # a server drops a run whose master stopped renewing its key this long...
MASTER_GRACE_SECONDS = 5      # ...and whose key stayed gone this long (a restarted Redis: the master sets it again)
RUN_KEYS_TTL_SECONDS = 24 * 3600  # every key a run makes in Redis expires after this long untouched
START_GRACE_SECONDS = 60.0    # a server told to start a run must name it in its heartbeat within this
SHUFFLE_TIMEOUT_SECONDS = 600.0  # a spill file transfer that makes no progress this long fails the map phase
COMBINE_MIN_ITEMS = 65_536     # ...or once this many new items average 8 or more per key
COMBINE_COPIES_RUN = 1024      # n counted copies of an item reach the combiner as its output for this
#                                many, n / this times (associative), plus the rest
EAGER_COMBINE_ITEMS_PER_KEY = 8  # a drained batch with this many items per key is combined at once
COMBINE_BUFFER_BYTES = 256 * 1024 ** 2  # combine once map output grows this much (cache-friendly)
SIZE_SAMPLE_ITEMS = 256        # items sampled for a first estimate of the memory an item takes
RESAMPLE_ITEMS = 32            # items sampled from later batches...
RESAMPLE_EVERY_BATCHES = 16    # ...every this many batches, and from every big batch
GZIP_LEVEL = 3
# Workers allocate millions of small objects and free few cycles: fewer young-generation
# collections save ~6% of the telemetry map phase (measured, BENCHMARKS.md).
WORKER_GC_THRESHOLDS = (100_000, 50, 1000)

# --- the Runner -------------------------------------------------------------------------
RUNNER_IDLE_SECONDS = 2.0      # with nothing due, the Runner looks at the queue again this often
LOG_MAX_BYTES = 50 * 1024 ** 2  # a server's or the Runner's log is rotated past this size...
LOG_BACKUPS = 3                # ...keeping this many older files (<log>.1 is the newest of them)
RUN_DIRS_KEPT = 10             # per-run folders (unpacked tarball, log) kept per script job
KILL_GRACE_SECONDS = 5.0       # a stopped script's processes get SIGTERM, then SIGKILL after this long
RUN_PROGRESS_EVERY_SECONDS = 2.0  # a running mapreduce job's counters reach the history this often
RETRY_DELAY_MINUTES = 5       # a failed job's first retry waits this long (job key retry_delay_minutes)...
RETRY_MAX_DELAY_MINUTES = 6 * 60  # ...each next one twice as long, at most this
BUSY_RETRY_SECONDS = 30.0     # a job refused because the cluster runs another is tried again after this
RECOVERY_WAIT_SECONDS = 30.0   # a restarted Runner waits this long for the servers to drop a dead run

# --- job scripts (python -m cluster.job) ------------------------------------------------
COMBINE_THRESHOLD = 50         # a key's values are combined once a map context holds more than this many
SCRIPT_CONTEXT_MAX_ITEMS = 100_000  # a combining map context hands its values to the shuffler past this many
DOWNLOAD_TRIES = 3             # each file fetched from S3 is tried this many times...
DOWNLOAD_BACKOFF_SECONDS = 1.0  # ...waiting this long, then twice as long, between tries
DOWNLOAD_THREADS = 8           # files fetched at once

# --- the web dashboard (mapreduce dashboard) ---------------------------------------------
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8787
DASHBOARD_PASSWORD_ENV = "CLUSTER_DASHBOARD_PASSWORD"
DASHBOARD_MIN_PASSWORD_CHARS = 12  # off loopback: a shorter password is refused
DASHBOARD_REFRESH_SECONDS = 3  # the cluster page and a running job's progress refresh this often
DASHBOARD_STATUS_CACHE_SECONDS = 2.0  # cluster status is asked of the locations at most this often
DASHBOARD_SESSION_HOURS = 12   # a login lasts this long
DASHBOARD_MAX_UPLOAD_BYTES = 512 * 1024 ** 2  # the largest code tarball the form takes
DASHBOARD_TARBALLS_KEPT = 2    # uploaded tarballs kept per job (the current one and the one before)
DASHBOARD_RUNTIMES_CHARTED = 30  # runs in a job page's runtime chart
DASHBOARD_THREADS = 8          # requests served at once

# --- the Dask executor ---------------------------------------------------------------------------
DASK_MAP_BATCH_BYTES = 128 * 1024 ** 2  # input per map task at most (tasks: a whole number per thread)
DASK_MEMORY_SHARE = 0.3                 # of a worker thread's memory limit, for a task's sort and shuffle
DASK_MIN_MEMORY_BUDGET = 16 * 1024 ** 2
DASK_TASK_RETRIES = 3                   # an infrastructure error's retries (a job's own errors: none)
DASK_CONNECT_TIMEOUT_SECONDS = 30.0     # reaching the scheduler, and its first worker
DASK_MAX_PROJECT_BYTES = 64 * 1024 ** 2  # a project's files, sent with every Dask job
DASK_PARTITION_INPUT_BYTES = 512 * 1024 ** 2  # input per reduce partition, past one per worker thread
DASK_NO_WORKERS_SECONDS = 60.0          # a run fails once its scheduler has had no worker this long
