#!/usr/bin/env bash
# Runs the API (gunicorn) and one worker in the foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${JWT_SECRET:-}" ]; then
  # A development secret, kept across runs so tokens survive a restart; never for production.
  secret_file=.run/jwt-secret
  mkdir -p .run
  [ -s "$secret_file" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$secret_file"
  JWT_SECRET=$(cat "$secret_file")
  export JWT_SECRET
  echo "run: generated a development JWT_SECRET (kept in $secret_file)" >&2
fi

.venv/bin/taskservice api &
api=$!
.venv/bin/taskservice worker &
worker=$!

stop() {
  trap - INT TERM
  kill -TERM "$api" "$worker" 2>/dev/null || true
  wait "$api" "$worker" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "run: API on http://${HOST:-127.0.0.1}:${PORT:-8000} (pid $api), worker pid $worker; Ctrl-C stops both" >&2
# Stop everything when either process ends on its own.
wait -n "$api" "$worker"
