#!/usr/bin/env bash
# Entrypoint of the redis stand-in: run redis-server as the redis user, logging to stdout, on
# every interface with protected mode off (as the official image does without a configuration
# file) and with no persistence. The command's own options come after these, so they win.
set -euo pipefail

if [[ ${1:-} != redis-server ]]; then
  exec "$@"
fi

if [[ $(id -u) -eq 0 ]]; then
  # A fresh volume or tmpfs on /data belongs to root.
  chown redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

shift
exec redis-server --bind 0.0.0.0 --protected-mode no --save '' --appendonly no --dir /data "$@"
