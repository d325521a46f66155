#!/usr/bin/env bash
# Smoke test of the Docker Compose deployment (`make compose-test`).
#
# Runs README's quick start ("Deploy with Docker Compose") on a copy of .env.example of its
# own, with `up --build -d` under a project name of its own and nginx on a free loopback port;
# waits for every service to be healthy; checks that the api and the worker reach Redis at their
# REDIS_URL and that Redis keeps nothing on disk; runs README's curl walk-through through nginx;
# checks that the worker, in its container, ran the task in a sibling sandbox container that it
# asked for through the socket proxy, and that the proxy refuses what the worker does not need;
# checks that Prometheus scrapes the api and the worker (both targets up, the task counted) and
# that nginx refuses /metrics from outside; checks that the image has no pip, and that the API
# refuses the placeholder JWT secret; then removes the stack with its volumes.
#
# Images the compose file pulls come from scripts/compose-standins.sh (the local ones, a pull,
# or Debian stand-ins) and are kept, as is the app image it builds, so a second run is quick.
#
# Environment:
#   COMPOSE               compose command (default: `docker compose` if present, else
#                         docker-compose, installed from Debian when missing)
#   COMPOSE_SMOKE_WAIT    seconds to wait for the stack to be healthy (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."

me="compose-smoke"
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }
checks=0
ok() { checks=$((checks + 1)); log "ok: $*"; }

wait_secs=${COMPOSE_SMOKE_WAIT:-300}
started=$SECONDS

scripts/ensure-docker.sh

if [[ -n ${COMPOSE:-} ]]; then
  read -r -a compose_cmd <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
      die "neither 'docker compose' nor docker-compose is installed; install one (Debian: apt-get install docker-compose)"
    fi
    log "installing Debian's docker-compose"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  fi
  compose_cmd=(docker-compose)
fi
log "compose: ${compose_cmd[*]} ($("${compose_cmd[@]}" version --short 2>/dev/null || echo '?'))"

scripts/compose-standins.sh
scripts/build-sandbox-image.sh
prepared=$SECONDS

project=taskservice-smoke-$(date +%s)-$$
work=$(mktemp -d)
env_file=$work/env
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
compose=("${compose_cmd[@]}" --project-name "$project" --env-file "$env_file")

container_of() { # service: its container's id (running or not)
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

state_of() { # service: health if it has a healthcheck, else its state; "missing" if none
  local id
  id=$(container_of "$1")
  [[ -n $id ]] || { echo missing; return; }
  docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}/{{.State.ExitCode}}{{end}}' "$id"
}

passed=
finish() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -z $passed ]]; then
    log "FAILED; service states and recent logs follow"
    for service in postgres rabbitmq redis migrate api worker docker-socket-proxy prometheus nginx; do
      printf '  %-20s %s\n' "$service" "$(state_of "$service" 2>/dev/null || echo '?')" >&2
    done
    "${compose[@]}" logs --no-color --tail=40 >&2 2>/dev/null || true
  fi
  log "removing the stack and its volumes"
  "${compose[@]}" down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 ||
    log "warning: '${compose[*]} down -v' failed; remove project $project by hand"
  rm -rf "$work"
  # The closing line, in the form CI reads.
  if [[ -n $passed ]]; then echo "$me: $checks passed, 0 failed"; else echo "$me: $checks passed, 1 failed"; fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- README's quick start, on this run's own env file ------------------------------------
cp .env.example "$env_file"
for name in JWT_SECRET POSTGRES_PASSWORD RABBITMQ_DEFAULT_PASS; do
  sed -i.bak "s/^$name=.*/$name=$(python3 -c 'import secrets; print(secrets.token_hex(32))')/" "$env_file"
done && rm "$env_file.bak"
# This run's own: nginx on a free port of the loopback only, and an app image tag of its own.
sed -i -e "s/^NGINX_BIND_ADDRESS=.*/NGINX_BIND_ADDRESS=127.0.0.1/" -e "s/^NGINX_PORT=.*/NGINX_PORT=$port/" \
  -e "s|^TASKSERVICE_IMAGE=.*|TASKSERVICE_IMAGE=taskservice/app:compose-test|" "$env_file"
# Limits no check here reaches (all of them come from one address), and a subnet for nginx's
# network that no other network on the engine has, so that stacks run side by side (other
# checkouts' smoke tests) do not clash on the default one.
used_subnets=$(docker network inspect $(docker network ls -q) --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null || true)
for _ in $(seq 50); do
  edge_subnet=10.213.$((RANDOM % 256)).0/24
  [[ " $used_subnets " == *" $edge_subnet "* ]] || break
done
sed -i -e "s|^RATE_LIMIT_AUTH=.*|RATE_LIMIT_AUTH=100000/minute|" -e "s|^RATE_LIMIT_SUBMIT=.*|RATE_LIMIT_SUBMIT=100000/minute|" \
  -e "s|^RATE_LIMIT_READ=.*|RATE_LIMIT_READ=100000/minute|" -e "s|^EDGE_SUBNET=.*|EDGE_SUBNET=$edge_subnet|" "$env_file"

log "up --build -d (project $project, nginx on $base)"
"${compose[@]}" up --build -d >"$work/up.log" 2>&1 || { tail -n 40 "$work/up.log" >&2; die "compose up failed"; }

log "waiting up to ${wait_secs}s for the services to be healthy"
deadline=$((SECONDS + wait_secs))
while :; do
  pending=()
  for service in postgres rabbitmq redis api worker prometheus nginx; do
    [[ $(state_of "$service") == healthy ]] || pending+=("$service=$(state_of "$service")")
  done
  [[ $(state_of migrate) == exited/0 ]] || pending+=("migrate=$(state_of migrate)")
  ((${#pending[@]} == 0)) && break
  ((SECONDS < deadline)) || die "not healthy after ${wait_secs}s: ${pending[*]}"
  sleep 2
done
healthy=$SECONDS
ok "every service healthy, migrate exited 0, after $((healthy - prepared))s"

# --- Redis: reached by the api and the worker at their REDIS_URL; a cache, nothing on disk --
redis_ping='
import os, socket, sys
from urllib.parse import urlsplit
url = os.environ["REDIS_URL"]
u = urlsplit(url)
with socket.create_connection((u.hostname, u.port or 6379), 2) as sock:
    sock.sendall(b"PING\r\n")
    reply = sock.makefile("rb").readline().strip().decode()
print(url, reply)
sys.exit(url != "redis://redis:6379/0" or reply != "+PONG")
'
for service in api worker; do
  docker exec "$(container_of "$service")" python3 -c "$redis_ping" >"$work/redis-$service.log" 2>&1 ||
    { cat "$work/redis-$service.log" >&2; die "the $service container does not reach Redis at redis://redis:6379/0"; }
done
ok "the api and the worker reach Redis at their REDIS_URL: $(cat "$work/redis-api.log")"
redis_id=$(container_of redis)
redis_config=$(docker exec "$redis_id" redis-cli config get save && docker exec "$redis_id" redis-cli config get appendonly)
[[ $redis_config == $'save\n\nappendonly\nno' ]] ||
  die "Redis keeps data on disk; expected save '' and appendonly no, got: ${redis_config//$'\n'/ }"
[[ -z $(docker port "$redis_id") ]] || die "Redis publishes a port: $(docker port "$redis_id")"
ok "Redis keeps nothing on disk (no snapshots, no append-only file) and publishes no port"

# --- README's curl walk-through, through nginx ---------------------------------------------
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

[[ $(curl -fsS "$base/") == "Task Service API is running" ]] || die "GET / through nginx did not answer as expected"
ok "GET / through nginx: Task Service API is running"
grep -qi swagger-ui <<<"$(curl -fsS "$base/swagger/")" || die "GET /swagger/ through nginx did not serve Swagger UI"
curl -fsS "$base/openapi.json" | json_field openapi >/dev/null || die "GET /openapi.json failed"
ok "GET /swagger/ and /openapi.json through nginx"

curl -fsS -X POST "$base/register" -H 'Content-Type: application/json' \
  -d '{"username":"ada","password":"correct horse"}' >/dev/null || die "POST /register failed"
TOKEN=$(curl -fsS -X POST "$base/login" -H 'Content-Type: application/json' \
  -d '{"username":"ada","password":"correct horse"}' | json_field token) || die "POST /login failed"

submitted=$(date +%s)
TASK_ID=$(curl -fsS -X POST "$base/task" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"code":"print(6*7)"}' | json_field task_id) ||
  die "POST /task failed"

wait_final() { # task id: prints the final status
  local id=$1 status deadline=$((SECONDS + 90))
  while :; do
    status=$(curl -fsS "$base/status/$id" -H "Authorization: Bearer $TOKEN" | json_field status)
    case $status in queued | running) ;; *) echo "$status"; return ;; esac
    ((SECONDS < deadline)) || die "task $id still $status after 90s"
    sleep 1
  done
}
status=$(wait_final "$TASK_ID")
result=$(curl -fsS "$base/result/$TASK_ID" -H "Authorization: Bearer $TOKEN")
[[ $status == succeeded && $(json_field stdout <<<"$result") == 42 ]] ||
  die "task $TASK_ID: expected status succeeded and stdout 42, got: $result"
ok "register, login, task $TASK_ID printed 42"

# The limits count in Redis and answer with their headers through nginx.
limit_headers=$(curl -fsS -D - -o /dev/null "$base/status/$TASK_ID" -H "Authorization: Bearer $TOKEN" | tr -d '\r')
grep -qi '^RateLimit-Policy: "read";q=100000;w=60$' <<<"$limit_headers" && grep -qi '^RateLimit: "read";r=' <<<"$limit_headers" ||
  die "GET /status through nginx came without the rate-limit headers: $limit_headers"
ok "rate limits in force through nginx: $(grep -i '^RateLimit:' <<<"$limit_headers")"
# Live output through nginx's own location for it: the finished task's events replay and end.
events=$(curl -fsSN --max-time 30 "$base/task/$TASK_ID/events" -H "Authorization: Bearer $TOKEN") ||
  die "GET /task/$TASK_ID/events through nginx failed"
# The output may come in pieces (print writes the text and its newline apart): the first
# stdout event starts with 42.
grep -qF 'data: {"data": "42' <<<"$events" && grep -qx 'event: result' <<<"$events" ||
  die "GET /task/$TASK_ID/events through nginx: no output or no result event in: $events"
ok "GET /task/$TASK_ID/events through nginx replays the output and the result"
# Redis is optional to the service, so a stack that never reached it would pass every check
# above: the task's states must have gone through its status cache.
cached=$(docker exec "$redis_id" redis-cli dbsize)
[[ $cached =~ ^[0-9]+$ ]] && ((cached > 0)) ||
  die "Redis holds no keys after task $TASK_ID ran: the api and the worker do not use it (dbsize: $cached)"
ok "the status cache is in use: Redis holds $cached keys after the task"

# A task near the largest body nginx must let through (1 MiB of stdin, the default limit).
big_task=$(python3 -c 'import json; print(json.dumps({"code": "import sys; print(len(sys.stdin.buffer.read()))", "stdin": "x" * 1048576}))' |
  curl -fsS -X POST "$base/task" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary @- | json_field task_id) || die "POST /task with 1 MiB of stdin failed through nginx"
big_status=$(wait_final "$big_task")
big_result=$(curl -fsS "$base/result/$big_task" -H "Authorization: Bearer $TOKEN")
[[ $big_status == succeeded && $(json_field stdout <<<"$big_result") == 1048576 ]] ||
  die "task with 1 MiB of stdin: expected 1048576, got: $big_result"
ok "a task with 1 MiB of stdin passed nginx and reached its sandbox whole"

# A body past nginx's own limit: refused by nginx, still as the API's JSON error shape.
too_large=$(head -c 68157440 /dev/zero | tr '\0' x | curl -sS -o "$work/too-large.json" -w '%{http_code}' \
  -X POST "$base/task" -H 'Content-Type: application/json' --data-binary @-) || true
[[ $too_large == 413 ]] || die "a 65 MiB body through nginx: expected 413, got $too_large"
[[ $(json_field title <"$work/too-large.json") == "Payload too large" ]] ||
  die "nginx's 413 is not the JSON error shape: $(head -c 200 "$work/too-large.json")"
ok "a 65 MiB body is refused by nginx with a JSON 413"

# --- The worker ran it in a sibling sandbox container, through the socket proxy ------------
created=$(docker events --since "$submitted" --until "$(date +%s)" --filter type=container \
  --filter event=create --filter "label=taskservice.task_id=$TASK_ID" \
  --format '{{.ID}} {{index .Actor.Attributes "image"}}')
[[ -n $created ]] || die "the engine saw no sandbox container created for task $TASK_ID"
ok "the engine created sandbox container ${created%% *} (${created#* }) for task $TASK_ID"
# Whole logs into a variable first: `docker logs | grep -q` fails under pipefail when grep
# stops reading early.
worker_log=$(docker logs "$(container_of worker)" 2>&1)
grep -q "task $TASK_ID attempt 1: succeeded" <<<"$worker_log" ||
  die "the worker container's log does not show task $TASK_ID succeeding"
proxy_log=$(docker logs "$(container_of docker-socket-proxy)" 2>&1)
grep -q "POST /v[0-9.]*/containers/create" <<<"$proxy_log" ||
  die "the socket proxy's log shows no container creation: the worker did not go through it"
ok "the worker container ran the task, creating its sandbox through the socket proxy"

# python-data runs in an image of its own, which the worker must find on the same engine. Its
# imports take seconds on a loaded host: the longest time limit, and a place after the checks
# that read the engine's recent events for the first task, which may be gone that much later.
plot='import matplotlib.pyplot as plt, numpy as np\nplt.plot(np.arange(5) ** 2)\nplt.savefig(\"/tmp/p.png\")\nprint(open(\"/tmp/p.png\", \"rb\").read(4)[1:].decode())'
data_id=$(curl -fsS -X POST "$base/task" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"language\":\"python-data\",\"timeout\":60,\"code\":\"$plot\"}" | json_field task_id) || die "POST /task (python-data) failed"
status=$(wait_final "$data_id")
result=$(curl -fsS "$base/result/$data_id" -H "Authorization: Bearer $TOKEN")
[[ $status == succeeded && $(json_field stdout <<<"$result") == PNG ]] ||
  die "python-data task $data_id: expected a PNG saved, got: $result"
ok "a python-data task drew a matplotlib PNG with numpy"

# What the worker does not need, the proxy refuses: listing images, exec into a container.
probe='
import http.client, sys
connection = http.client.HTTPConnection("docker-socket-proxy", 2375, timeout=10)
for method, path in (("GET", "/v1.41/images/json"), ("POST", "/v1.41/containers/x/exec"), ("GET", "/v1.41/info")):
    connection.request(method, path, body=b"" if method == "POST" else None)
    response = connection.getresponse()
    response.read()
    print(method, path, response.status)
    if response.status != 403:
        sys.exit(1)
'
docker exec "$(container_of worker)" python3 -c "$probe" >"$work/probe.log" 2>&1 ||
  { cat "$work/probe.log" >&2; die "the socket proxy let through a call the worker does not need"; }
ok "the socket proxy refuses image, exec and system calls (403)"

# --- Metrics: Prometheus scrapes the api, the worker and the webhooks; nginx keeps /metrics in -
metrics_status=$(curl -sS -o "$work/metrics.json" -w '%{http_code}' "$base/metrics") || true
[[ $metrics_status == 404 && $(json_field title <"$work/metrics.json") == "Not found" ]] ||
  die "GET /metrics through nginx: expected a JSON 404, got $metrics_status: $(head -c 200 "$work/metrics.json")"
ok "nginx refuses /metrics from outside with a JSON 404"
for service in worker webhooks prometheus; do
  [[ -z $(docker port "$(container_of "$service")") ]] || die "the $service publishes a port: $(docker port "$(container_of "$service")")"
done
prometheus_id=$(container_of prometheus)
prometheus_api() { # path: Prometheus's HTTP API, asked from inside its container
  docker exec "$prometheus_id" wget -q -O - "http://127.0.0.1:9090$1"
}
# Every job's target up; Prometheus finds them by DNS and scrapes every 15 s.
targets_up='
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
health = {t["labels"]["job"]: t["health"] for t in targets}
print(" ".join(f"{job}={state}" for job, state in sorted(health.items())))
sys.exit(health != {"taskservice-api": "up", "taskservice-webhooks": "up", "taskservice-worker": "up"})
'
deadline=$((SECONDS + 120))
until targets=$(prometheus_api /api/v1/targets | python3 -c "$targets_up" 2>&1); do
  ((SECONDS < deadline)) || die "Prometheus's targets are not all up after 120s: $targets"
  sleep 3
done
ok "Prometheus scrapes every target: $targets"
# The task of the walk-through, as the worker counted it and Prometheus stored it.
succeeded='
import json, sys
result = json.load(sys.stdin)["data"]["result"]
total = sum(float(r["value"][1]) for r in result)
print(total)
sys.exit(total < 1)
'
query='sum(taskservice_tasks_finished_total{status="succeeded"})'
deadline=$((SECONDS + 60))
until counted=$(prometheus_api "/api/v1/query?query=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$query")" |
  python3 -c "$succeeded" 2>&1); do
  ((SECONDS < deadline)) || die "Prometheus has no succeeded task after 60s: $counted"
  sleep 3
done
ok "Prometheus has the worker's count of succeeded tasks: $counted"
# The webhooks service's counters exist from its start (at 0), each outcome and status class.
query='count(taskservice_webhook_attempts_total)'
deadline=$((SECONDS + 60))
until counted=$(prometheus_api "/api/v1/query?query=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$query")" |
  python3 -c "$succeeded" 2>&1); do
  ((SECONDS < deadline)) || die "Prometheus has no webhook attempt series after 60s: $counted"
  sleep 3
done
ok "Prometheus has the webhooks service's attempt series: $counted"

# --- The image ships no pip (README, "Deploy with Docker Compose") ---------------------------
# Neither interpreter may import it: the virtualenv's, nor the base image's own that the
# virtualenv runs on (pyvenv.cfg's home); and no pip command is on PATH.
no_pip='
home=$(sed -n "s/^home = //p" /opt/venv/pyvenv.cfg)
for python in python python3 "$home/python3"; do
  if "$python" -m pip --version; then exit 1; fi
done
for command in pip pip3; do
  if command -v "$command"; then exit 1; fi
done
'
docker exec "$(container_of api)" sh -c "$no_pip" >"$work/no-pip.log" 2>&1 ||
  { cat "$work/no-pip.log" >&2; die "the api image ships pip"; }
ok "the api image has no pip: python -m pip fails in every interpreter, no pip command"

# --- The API refuses the placeholder secret of .env.example --------------------------------
placeholder=$(sed -n 's/^JWT_SECRET=//p' .env.example)
# The exit status is read from the container: `run --rm` does not pass it on in every compose.
one_off=$project-placeholder
"${compose[@]}" run --no-deps -T --name "$one_off" -e "JWT_SECRET=$placeholder" api >"$work/placeholder.log" 2>&1 || true
refused=$(docker inspect --format '{{.State.ExitCode}}' "$one_off" 2>/dev/null || echo none)
docker rm -f "$one_off" >/dev/null 2>&1 || true
if [[ $refused == 0 || $refused == none ]] || ! grep -q placeholder "$work/placeholder.log"; then
  cat "$work/placeholder.log" >&2
  die "the api did not refuse the placeholder JWT_SECRET (exit status $refused)"
fi
ok "the api refuses the placeholder JWT_SECRET: $(grep -m1 placeholder "$work/placeholder.log")"

passed=1
log "passed in $((SECONDS - started))s (stand-ins and sandbox image $((prepared - started))s," \
  "up to healthy $((healthy - prepared))s, checks $((SECONDS - healthy))s)"
