#!/usr/bin/env bash
# Make sure a Compose command is installed, for the test that validates the deployment files
# with `config` (tests/test_deploy_files.py): `docker compose` (v2) when present, else Debian's
# docker-compose (1.29), installed here when missing. Nothing is started.
#
# Idempotent: when either is there this is a quick no-op. As root it installs the package with
# apt-get; otherwise it says what to run.
set -euo pipefail

me=ensure-compose
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

if docker compose version >/dev/null 2>&1; then
  log "docker compose is installed ($(docker compose version --short 2>/dev/null || echo '?'))"
  exit 0
fi
if command -v docker-compose >/dev/null; then
  log "docker-compose is installed ($(docker-compose version --short 2>/dev/null || echo '?'))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  die "no Compose command and only root can install one; run: sudo apt-get install docker-compose"
fi
command -v apt-get >/dev/null || die "no Compose command and there is no apt-get to install one with"

log "installing Debian's docker-compose"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends docker-compose
command -v docker-compose >/dev/null || die "apt-get installed docker-compose but it is not on PATH"
log "docker-compose installed ($(docker-compose version --short 2>/dev/null || echo '?'))"
