#!/usr/bin/env bash
# Make gVisor's runsc available to the local Docker engine as the runtime "runsc".
#
# Installs Debian's runsc package when it is missing, adds the runtime to dockerd's
# daemon.json (keeping every other setting there), and asks the running dockerd to
# reload its configuration with SIGHUP. A reload neither restarts dockerd nor touches
# running containers. Idempotent. Then run the worker with SANDBOX_RUNTIME=runsc.
#
# Environment:
#   DOCKER_DAEMON_JSON  dockerd's configuration file (default /etc/docker/daemon.json)
#   RUNSC_FLAGS         runsc flags, space-separated (default "--network=none": runsc
#                       refuses Docker's network_mode=none otherwise, and tasks get no
#                       network either way)
set -euo pipefail

me=enable-runsc
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

daemon_json=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
runsc_flags=${RUNSC_FLAGS---network=none}

# The runsc entry dockerd reports, as one canonical JSON line (empty if none).
engine_runsc() {
  timeout 15 docker info --format '{{json .Runtimes}}' 2>/dev/null |
    python3 -c 'import json, sys; r = json.load(sys.stdin).get("runsc"); print(json.dumps(r, sort_keys=True) if r else "")'
}
runtime_listed() { [[ -n $(engine_runsc) ]]; }

case "${DOCKER_HOST:-}" in
  "" | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
  *)
    runtime_listed || die "the engine at DOCKER_HOST=$DOCKER_HOST has no runsc runtime; register it on that host"
    log "the engine at DOCKER_HOST=$DOCKER_HOST has runsc"
    exit 0
    ;;
esac

[[ $(id -u) -eq 0 ]] || die "registering a runtime needs root; run: sudo $0"

if ! command -v runsc >/dev/null; then
  command -v apt-get >/dev/null || die "runsc is missing and apt-get is unavailable; install gVisor's runsc"
  log "installing Debian's runsc"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends runsc >/dev/null
fi
runsc_path=$(command -v runsc)

# Merge rather than overwrite: the file may hold the operator's other settings.
mkdir -p "$(dirname "$daemon_json")"
wanted=$(python3 -c 'import json, sys; flags = sys.argv[2].split(); print(json.dumps({"path": sys.argv[1], **({"runtimeArgs": flags} if flags else {})}, sort_keys=True))' "$runsc_path" "$runsc_flags")
changed=$(python3 - "$daemon_json" "$wanted" <<'PY'
import json, os, sys
path, wanted = sys.argv[1], json.loads(sys.argv[2])
try:
    with open(path) as f:
        settings = json.load(f)
except FileNotFoundError:
    settings = {}
if settings.get("runtimes", {}).get("runsc") == wanted:
    print("no")
    sys.exit()
settings.setdefault("runtimes", {})["runsc"] = wanted
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(settings, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
print("yes")
PY
)
[[ $changed == yes ]] && log "added runsc ($runsc_path) to $daemon_json"

if [[ $(engine_runsc) == "$wanted" ]]; then
  log "dockerd already has runsc ($wanted)"
  exit 0
fi

# Reload, never restart: a restart would kill every running container.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null && systemctl is-active -q docker.service; then
  systemctl reload docker.service
else
  pid=$(pgrep -x dockerd | head -n1) || die "no dockerd is running; start it (scripts/ensure-docker.sh), it will read $daemon_json"
  kill -HUP "$pid"
fi
for _ in $(seq 20); do
  [[ $(engine_runsc) == "$wanted" ]] && { log "dockerd now has runsc ($wanted)"; exit 0; }
  sleep 0.5
done
die "dockerd did not pick up runsc after a reload; see its log"
