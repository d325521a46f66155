#!/usr/bin/env bash
# Make sure `nginx` is installed, for the tests that start a real nginx with deploy/nginx.conf
# in front of a real API (tests/test_nginx.py).
#
# nginx comes with Debian's `nginx-light` package; its own service is not started (a container
# has no init; on a host with systemd, stop and disable it if it is unwanted: the tests run
# their own nginx on loopback ports). Idempotent: when nginx is already there this is a quick
# no-op. As root it installs the package with apt-get; otherwise it says what to run.
set -euo pipefail

me=ensure-nginx
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

nginx_bin() { command -v nginx || { test -x /usr/sbin/nginx && echo /usr/sbin/nginx; }; }

if bin=$(nginx_bin); then
  log "nginx is installed ($("$bin" -v 2>&1 | head -n 1))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  die "nginx is missing and only root can install it; run: sudo apt-get install nginx-light"
fi
command -v apt-get >/dev/null || die "nginx is missing and there is no apt-get to install it with"

log "installing Debian's nginx-light"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends nginx-light
bin=$(nginx_bin) || die "apt-get installed nginx-light but nginx is not on PATH"
log "nginx installed ($("$bin" -v 2>&1 | head -n 1))"
