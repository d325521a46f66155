#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`, starting a local dockerd if needed.
#
# Idempotent: when an engine already answers this is a quick no-op. It never
# stops or restarts an engine that is running.
#
# Environment:
#   DOCKER_HOST    if it names anything but the local socket, only check it
#   DOCKERD_FLAGS  extra dockerd flags; when set, no fallback flags are tried
#   DOCKERD_LOG    dockerd log file (default /var/log/taskservice-dockerd.log)
#   DOCKERD_WAIT   seconds to wait for dockerd to answer (default 60)
set -euo pipefail

me=ensure-docker
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

wait_secs=${DOCKERD_WAIT:-60}
log_file=${DOCKERD_LOG:-/var/log/taskservice-dockerd.log}

engine_answers() { timeout 15 docker info >/dev/null 2>&1; }

# A remote engine is someone else's to run: we can only report on it.
remote=
case "${DOCKER_HOST:-}" in
  "" | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
  *) remote="DOCKER_HOST=$DOCKER_HOST" ;;
esac
if [[ -z $remote && -n ${DOCKER_CONTEXT:-} && $DOCKER_CONTEXT != default ]]; then
  remote="DOCKER_CONTEXT=$DOCKER_CONTEXT"
fi
if [[ -n $remote ]]; then
  command -v docker >/dev/null || die "the docker CLI is missing; install it (Debian: apt-get install docker.io)"
  engine_answers || die "the Docker engine at $remote does not answer; start it, or unset it to use a local dockerd"
  log "Docker engine at $remote answers"
  exit 0
fi

if command -v docker >/dev/null && engine_answers; then
  log "Docker engine already answers"
  exit 0
fi

if command -v docker >/dev/null && timeout 15 docker info 2>&1 | grep -qi 'permission denied'; then
  die "dockerd runs but $(id -un) may not use its socket; add the user to the 'docker' group (then log in again) or run as root"
fi

if [[ $(id -u) -ne 0 ]]; then
  if command -v dockerd >/dev/null; then
    die "no Docker engine answers and only root can start one; run: sudo $0"
  fi
  die "Docker is not installed; run: sudo $0 (or install Debian's docker.io yourself)"
fi

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
  command -v apt-get >/dev/null || die "Docker is not installed and apt-get is unavailable; install Docker Engine, then rerun"
  log "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # ca-certificates: pulling from registries needs TLS roots; iptables: the default bridge network.
  apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >/dev/null
  # The package may have started the engine itself (systemd hosts).
  if engine_answers; then
    log "Docker engine answers after install"
    exit 0
  fi
fi

wait_for_engine() { # pid: wait until the engine answers or that process exits
  local pid=$1 deadline=$((SECONDS + wait_secs))
  while ((SECONDS < deadline)); do
    engine_answers && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 1
  done
  return 2
}

# On a systemd host the engine belongs to systemd; a hand-started dockerd would fight it.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
  log "starting docker.service"
  systemctl start docker.service || die "systemctl start docker failed; see: journalctl -u docker.service"
  for _ in $(seq "$wait_secs"); do
    engine_answers && { log "Docker engine answers"; exit 0; }
    sleep 1
  done
  die "docker.service started but the engine does not answer after ${wait_secs}s; see: journalctl -u docker.service"
fi

# Another dockerd may still be starting (e.g. a concurrent run); a second one would fail on its pid file.
if existing=$(pgrep -x dockerd | head -n1) && [[ -n $existing ]]; then
  log "dockerd (pid $existing) is already running; waiting for it to answer"
  if wait_for_engine "$existing"; then
    log "Docker engine answers"
    exit 0
  fi
  die "dockerd (pid $existing) does not answer after ${wait_secs}s; check ${log_file} or stop that process, then rerun"
fi

if ! touch "$log_file" 2>/dev/null; then
  log_file=/tmp/taskservice-dockerd.log
  touch "$log_file"
fi

# Plain dockerd is preferred: overlay2 and a bridge network are what a compose
# deployment wants. Inside containers or minimal VMs overlay mounts or iptables
# can be unavailable; the sandbox containers use network_mode=none, so running
# without the bridge (and on vfs) still serves the worker.
if [[ -n ${DOCKERD_FLAGS:-} ]]; then
  attempts=("$DOCKERD_FLAGS")
else
  attempts=(
    ""
    "--storage-driver=vfs"
    "--iptables=false --bridge=none"
    "--storage-driver=vfs --iptables=false --bridge=none"
  )
fi

for flags in "${attempts[@]}"; do
  read -r -a argv <<<"$flags"
  log "starting dockerd ${flags:-with default flags} (log: $log_file)"
  printf '\n==== %s %s: dockerd %s\n' "$(date -Is)" "$me" "$flags" >>"$log_file"
  # setsid + nohup: dockerd must outlive this script and its terminal or job group.
  nohup setsid dockerd "${argv[@]}" >>"$log_file" 2>&1 </dev/null &
  pid=$!
  status=0
  wait_for_engine "$pid" || status=$?
  if ((status == 0)); then
    log "Docker engine answers (dockerd pid $pid, flags: ${flags:-none})"
    exit 0
  fi
  if ((status == 2)); then
    kill "$pid" 2>/dev/null || true
    die "dockerd (pid $pid, flags: ${flags:-none}) did not answer within ${wait_secs}s and was stopped; see $log_file"
  fi
  wait "$pid" 2>/dev/null || true
  reason=$(grep -ih 'fail\|error' "$log_file" | tail -n1 | cut -c1-240)
  log "dockerd ${flags:-with default flags} exited: ${reason:-see $log_file}"
done

die "dockerd would not start with any of the tried flags; see $log_file, then set DOCKERD_FLAGS and rerun"
