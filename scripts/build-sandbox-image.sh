#!/usr/bin/env bash
# Make sure the sandbox image ($SANDBOX_IMAGE) exists in the local Docker engine.
#
# Uses python:3.12-slim when a registry is reachable; otherwise builds an
# equivalent Debian image (full python3 standard library, bash, the nobody user)
# with debootstrap, so hosts without registry access can still run tasks.
# Idempotent: an existing image makes this a quick no-op unless --force is given.
#
# Usage: build-sandbox-image.sh [--force]
# Environment:
#   SANDBOX_IMAGE          image to provide (default taskservice/sandbox-python:3)
#   SANDBOX_PULL_IMAGE     registry image to try first (default python:3.12-slim)
#   SANDBOX_DEBIAN_SUITE   suite for the local build (default bookworm)
#   DEBIAN_MIRROR          mirror for the local build (default: from apt's sources)
set -euo pipefail

me=build-sandbox-image
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

force=
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg'; usage: $0 [--force]" ;;
  esac
done

image=${SANDBOX_IMAGE:-taskservice/sandbox-python:3}
pull_image=${SANDBOX_PULL_IMAGE:-python:3.12-slim}
suite=${SANDBOX_DEBIAN_SUITE:-bookworm}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

"$script_dir/ensure-docker.sh"

old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if [[ -n $old_id && -z $force ]]; then
  log "image $image already exists (use --force to rebuild)"
  exit 0
fi

# The worker runs tasks exactly like this: no network, nobody:nogroup, read-only root.
verify() { # image-ref
  local run=(docker run --rm --network none --user 65534:65534 --read-only "$1")
  [[ $("${run[@]}" python3 -c 'import json, sqlite3, ssl; print(6*7)' 2>&1) == 42 ]] ||
    { log "python3 check failed in $1"; return 1; }
  [[ $("${run[@]}" bash -c 'echo ok' 2>&1) == ok ]] ||
    { log "bash check failed in $1"; return 1; }
  [[ $("${run[@]}" sh -c 'grep -q "^nobody:x:65534:65534:" /etc/passwd && grep -q "^nogroup:x:65534:" /etc/group && echo ok' 2>&1) == ok ]] ||
    { log "sh or nobody/nogroup (65534) check failed in $1"; return 1; }
}

# Tag only a verified image, so a failed --force rebuild keeps the old one usable.
publish() { # image-ref
  verify "$1" || die "the new image failed verification; $image was left unchanged"
  docker tag "$1" "$image"
  if [[ -n $old_id && $old_id != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true # still used by a container: keep it
  fi
}

start=$SECONDS
log "trying: docker pull $pull_image"
if timeout 60 docker pull -q "$pull_image" >&2; then
  publish "$pull_image"
  log "tagged $pull_image as $image in $((SECONDS - start))s"
  exit 0
fi
log "pull failed; building $image locally from Debian $suite"

# shellcheck source-path=SCRIPTDIR source=lib/debootstrap-image.sh
source "$script_dir/lib/debootstrap-image.sh"
# The full python3 package, not python3-minimal, plus the modules Debian splits
# out of it (venv/ensurepip, distutils, lib2to3, dbm.gnu): tasks expect the whole
# standard library, as in python:3.12-slim. Only tkinter is left out.
new_id=$(debootstrap_import "$suite" python3,python3-venv,python3-distutils,python3-lib2to3,python3-gdbm \
  "Debian $suite minbase + python3 ($me)" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]')
publish "$new_id"
log "built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')) in $((SECONDS - start))s"
