#!/usr/bin/env bash
# Make sure `promtool` is installed, for the tests that check the metrics, the dashboard's
# queries and Prometheus's configuration with it.
#
# promtool comes with Debian's `prometheus` package; the server it also brings is not started.
# Idempotent: when promtool is already there this is a quick no-op. As root it installs the
# package with apt-get; otherwise it says what to run.
set -euo pipefail

me=ensure-promtool
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

if command -v promtool >/dev/null; then
  log "promtool is installed ($(promtool --version 2>&1 | head -n 1))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  die "promtool is missing and only root can install it; run: sudo apt-get install prometheus"
fi
command -v apt-get >/dev/null || die "promtool is missing and there is no apt-get to install it with"

log "installing Debian's prometheus (for promtool)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Without recommends: node-exporter is not needed. A package's service is not started in a
# container without an init; on a host with systemd, stop the server if it is unwanted.
apt-get install -y -q --no-install-recommends prometheus
command -v promtool >/dev/null || die "apt-get installed prometheus but promtool is not on PATH"
log "promtool installed ($(promtool --version 2>&1 | head -n 1))"
