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

[[ $(id -u) -eq 0 ]] || die "building the image needs root (debootstrap); run: sudo $0"

if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "debootstrap is missing and apt-get is unavailable; install debootstrap, or make $pull_image pullable"
  log "installing Debian's debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The keyring and gpgv let debootstrap check the archive's signatures.
  apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring gpgv ca-certificates >/dev/null
fi

# Prefer the mirror apt already uses: it is known reachable from here, where deb.debian.org may not be.
find_mirror() {
  python3 - "$suite" <<'EOF' 2>/dev/null || true
import glob, re, sys
suite = sys.argv[1]
def one_line(path):
    for line in open(path):
        line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb" and line[2] == suite:
            yield line[1]
def deb822(path):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ", "\t")):
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.split()
        if "deb" in f.get("types", []) and suite in f.get("suites", []) and f.get("enabled", ["yes"]) != ["no"]:
            yield from f.get("uris", [])
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        for uri in one_line(path):
            print(uri); sys.exit()
    except OSError:
        pass
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for uri in deb822(path):
        print(uri); sys.exit()
EOF
}
mirror=${DEBIAN_MIRROR:-$(find_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}

# debootstrap reads proxies only from the environment, not from apt's configuration.
if [[ -z ${http_proxy:-} ]]; then
  eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null || true)"
  if [[ -n ${http_proxy:-} ]]; then export http_proxy; fi
fi

workdir=
cleanup() {
  [[ -n $workdir && -d $workdir ]] || return 0
  # debootstrap mounts /proc and /sys inside the target; never delete through a leftover mount.
  awk -v d="$workdir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# /var/tmp rather than /tmp: the rootfs is a few hundred MB and /tmp may be a small tmpfs.
workdir=$(mktemp -d /var/tmp/taskservice-sandbox.XXXXXX)
rootfs=$workdir/rootfs
log "debootstrap $suite from $mirror (a few minutes)"
# The full python3 package, not python3-minimal, plus the modules Debian splits
# out of it (venv/ensurepip, distutils, lib2to3, dbm.gnu): tasks expect the whole
# standard library, as in python:3.12-slim. Only tkinter is left out.
if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-distutils,python3-lib2to3,python3-gdbm "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1; then
  tail -n 20 "$workdir/debootstrap.log" >&2
  [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
  die "debootstrap failed (see above); check that $mirror is reachable, or set DEBIAN_MIRROR"
fi

# Trim what a task never reads; keep copyright files for the licences' sake.
(
  cd "$rootfs"
  rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old \
    usr/share/man/* usr/share/info/* usr/share/locale/*/ var/log/* tmp/* dev/*
  find usr/share/doc -type f ! -name copyright -delete
  find usr/share/doc -type d -empty -delete
  # debootstrap copied these from the build host; Docker supplies its own at run time.
  : >etc/resolv.conf
  : >etc/hostname
)

log "importing the rootfs into Docker"
new_id=$(tar -C "$rootfs" --numeric-owner -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "Debian $suite minbase + python3 ($me)" \
    - )
publish "$new_id"
log "built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')) in $((SECONDS - start))s"
