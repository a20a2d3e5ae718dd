#!/usr/bin/env bash
# Idempotent set-up of this machine for the cluster: OS packages when missing,
# a virtualenv in .venv, and the package (the runtime a cluster machine needs).
#   init/install.sh                      the runtime only (every cluster machine)
#   EXTRAS=dashboard init/install.sh     + the web dashboard (the master), or s3, or dask, or dashboard,s3
#   EXTRAS=test init/install.sh          + what the tests need (scripts/test asks for it)
#   EXTRAS=test,bench init/install.sh    + the benchmarks' comparisons (scripts/bench asks for it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${EXTRAS:-}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v screen >/dev/null 2>&1 || need+=(screen)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
# sshd: the hosts of the multi-host tests (and every location of a real cluster) run one
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# the multi-host tests build hosts with `ip netns`, `unshare` and `nsenter`
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# the dashboard's browser tests drive Debian's Chromium with Playwright (Playwright's own
# browser download needs the internet); a cluster without the test extras does not need it
if [[ ",$extras," == *",test,"* ]]; then
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if [ "${#need[@]}" -gt 0 ]; then
    echo "install.sh: installing OS packages: ${need[*]}" >&2
    if command -v apt-get >/dev/null 2>&1; then
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        # We start our own redis-servers on our own ports; the distribution's
        # default instance is not ours to keep running.
        if command -v systemctl >/dev/null 2>&1; then
            [[ " ${need[*]} " == *" redis-server "* ]] && { as_root systemctl disable --now redis-server >/dev/null 2>&1 || true; }
        fi
    else
        echo "install.sh: please install ${need[*]} with your OS package manager" >&2
        exit 1
    fi
fi

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=".venv/.installed-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)-${extras//,/_}"
# a different set of extras than last time: reinstall (pip leaves extras it no longer needs; that is fine)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    if [ -n "$extras" ]; then
        .venv/bin/python -m pip install -q -e ".[${extras}]"
    else
        .venv/bin/python -m pip install -q -e .
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi
