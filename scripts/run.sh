#!/usr/bin/env bash
# Runs the API (gunicorn) and one worker in the foreground. Ctrl-C stops both: the first lets
# the worker finish its running tasks, a second makes it kill them and exit at once.
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

pids=()
alive() { kill -0 "$1" 2>/dev/null; }
forward() { [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true; }
stopping=
on_signal() {
  stopping=1
  forward
}
# On an exit for any other reason (an error in this script), leave nothing running; never a
# second SIGTERM after a Ctrl-C, which would make the worker kill its running tasks.
on_exit() { [ -n "$stopping" ] || forward; }
# Before the processes start, so that no early Ctrl-C leaves them behind.
trap on_signal INT TERM HUP
trap on_exit EXIT

# Each in a process group of its own (job control on while they start): the terminal sends
# Ctrl-C's SIGINT to its foreground group only, which is then this script alone, so that each
# Ctrl-C reaches the worker once, as the one SIGTERM of on_signal. In this script's group, the
# worker would count the terminal's SIGINT and the forwarded SIGTERM as two signals, and the
# first Ctrl-C would kill its running tasks. Off again at once, so that no later command is
# given the terminal.
set -m
.venv/bin/taskservice api &
api=$!
pids+=("$api")
.venv/bin/taskservice worker &
worker=$!
pids+=("$worker")
set +m

echo "run: API on http://${HOST:-127.0.0.1}:${PORT:-8000} (pid $api), worker pid $worker; Ctrl-C stops both" >&2
# A trapped signal ends `wait` early, hence the loops. Stop everything when either process ends
# on its own, and exit with its status; after a Ctrl-C both are stopping already, and one more
# SIGTERM would be the worker's second.
status=0
while alive "$api" && alive "$worker"; do wait -n "$api" "$worker" || status=$?; done
if [ -n "$stopping" ]; then status=0; else forward; fi
while alive "$api" || alive "$worker"; do wait || true; done
trap - EXIT
exit "$status"
