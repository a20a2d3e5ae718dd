#!/usr/bin/env bash
# Keep the queue's Runner in GNU screen session `cluster_runner` (see INSTALL.md, step 5).
#   init/runner_screen.sh start [--config PATH] [--local]   start it (refused if one runs)
#   init/runner_screen.sh stop [--config PATH]              SIGTERM: finish the current job, exit
#   init/runner_screen.sh status [--config PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
session="${CLUSTER_RUNNER_SESSION:-cluster_runner}"
mapreduce="$PWD/.venv/bin/mapreduce"
action="${1:-}"
[ $# -gt 0 ] && shift
config=()
for ((i = 1; i <= $#; i++)); do
    if [ "${!i}" = "--config" ]; then j=$((i + 1)); config=(--config "${!j}"); fi
done
workdir=$("$mapreduce" config "${config[@]}" | awk -F' = ' '$1 == "local_working_dir" {print $2}')
lock="$workdir/runner.lock"

running_pid() {  # the Runner holds an flock on runner.lock while it lives; the file names its pid
    [ -f "$lock" ] || return 1
    flock -n "$lock" true 2>/dev/null && return 1
    awk '{print $2; exit}' "$lock"
}

case "$action" in
start)
    if pid=$(running_pid); then
        echo "a Runner already works this queue (pid $pid); init/runner_screen.sh stop stops it" >&2
        exit 1
    fi
    mkdir -p "$workdir"
    args=$(printf ' %q' "$@")
    # the Runner writes its lines to $workdir/runner.log itself, size-capped and rotated
    screen -dmS "$session" bash -c "$mapreduce runner$args"
    echo "started the Runner in screen session $session (screen -r $session); log: $workdir/runner.log"
    ;;
stop)
    if ! pid=$(running_pid); then
        echo "no Runner works the queue in $workdir"
        exit 0
    fi
    kill -TERM "$pid"
    echo "sent SIGTERM to the Runner (pid $pid): it finishes its current job, then exits"
    ;;
status)
    if pid=$(running_pid); then echo "a Runner works the queue in $workdir (pid $pid)"
    else echo "no Runner works the queue in $workdir"; fi
    ;;
*)
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
