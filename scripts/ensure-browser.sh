#!/usr/bin/env bash
# Make sure Debian's `chromium` is installed, for the Swagger UI browser test.
#
# The test drives this system browser with Playwright; it never downloads a browser build
# of its own. Idempotent: when chromium is already there this is a quick no-op. As root it
# installs the package with apt-get; otherwise it says what to run.
set -euo pipefail

me=ensure-browser
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

if command -v chromium >/dev/null; then
  log "chromium is installed ($(chromium --version 2>/dev/null | head -n 1))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  die "chromium is missing and only root can install it; run: sudo apt-get install chromium"
fi
command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get to install it with"

log "installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# chromium-sandbox is only a recommendation: the test runs the browser with --no-sandbox.
apt-get install -y -q --no-install-recommends chromium
command -v chromium >/dev/null || die "apt-get installed chromium but it is not on PATH"
log "chromium installed ($(chromium --version 2>/dev/null | head -n 1))"
