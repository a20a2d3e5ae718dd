#!/usr/bin/env bash
# Prepare SSH from the master to every location: a key for the cluster and the hosts' keys.
#
#   init/ssh_setup.sh [--user USER] HOST [HOST ...]
#
# Makes ~/.ssh/cluster_ed25519 when missing, records each host's key in ~/.ssh/known_hosts
# (shown so you can compare the fingerprints with the machines' own), and prints the line to
# add to ~/.ssh/authorized_keys of USER on every host (or copies it with ssh-copy-id when that
# host still accepts a password). Nothing is sent anywhere else.
set -euo pipefail
user="${USER:-root}"
if [[ "${1:-}" == "--user" ]]; then user="$2"; shift 2; fi
if [[ $# -eq 0 ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
key="$HOME/.ssh/cluster_ed25519"
mkdir -p -m 700 "$HOME/.ssh"
if [[ ! -f "$key" ]]; then
    ssh-keygen -q -t ed25519 -N "" -C "cluster master $(hostname)" -f "$key"
    echo "made the cluster's SSH key $key"
fi
for host in "$@"; do
    if ssh-keygen -F "$host" >/dev/null 2>&1; then
        echo "$host: already in known_hosts"
    else
        ssh-keyscan -T 10 "$host" 2>/dev/null > "$HOME/.ssh/.scan.$$" || true
        if [[ ! -s "$HOME/.ssh/.scan.$$" ]]; then
            echo "$host: no answer on port 22; is openssh-server running there?" >&2
            rm -f "$HOME/.ssh/.scan.$$"
            continue
        fi
        echo "$host: host key fingerprints (compare with \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\` there):"
        ssh-keygen -lf "$HOME/.ssh/.scan.$$"
        cat "$HOME/.ssh/.scan.$$" >> "$HOME/.ssh/known_hosts"
        rm -f "$HOME/.ssh/.scan.$$"
    fi
    if ssh -o BatchMode=yes -i "$key" "$user@$host" true 2>/dev/null; then
        echo "$host: the key already logs in as $user"
    elif command -v ssh-copy-id >/dev/null && [[ -t 0 ]]; then
        ssh-copy-id -i "$key.pub" "$user@$host"
    else
        echo "$host: add this line to ~$user/.ssh/authorized_keys there:"
        cat "$key.pub"
    fi
done
echo
echo "in the cluster config: ssh_user = $user, ssh_key_file = $key"
