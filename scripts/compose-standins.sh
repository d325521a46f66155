#!/usr/bin/env bash
# Make sure every image that docker-compose.yml and the Dockerfile start from exists in the
# local Docker engine.
#
# For each image: one already present under that name and tag is used as it is (that is the
# cache); otherwise `docker pull` is tried; when no registry answers, a stand-in is built from
# Debian's packages under the same name and tag, with an entrypoint that honours the variables
# the compose file sets. The stand-ins exist so that the compose file and the Dockerfile can be
# exercised unchanged on a machine without registry access; real deployments pull the real
# images. Stand-ins carry the label taskservice.standin, so they are easy to tell apart.
#
# Usage: compose-standins.sh [--force]    (--force rebuilds the stand-ins, never pulled images)
# Environment:
#   STANDIN_DEBIAN_SUITE   Debian suite of the stand-ins (default bookworm)
#   DEBIAN_MIRROR          mirror for debootstrap (default: from apt's sources)
set -euo pipefail

me=compose-standins
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

force=
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg'; usage: $0 [--force]" ;;
  esac
done

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$script_dir")
standins=$script_dir/lib/standins
suite=${STANDIN_DEBIAN_SUITE:-bookworm}
base_image=taskservice/standin-debian:$suite
label=taskservice.standin

# Which stand-in recipe (scripts/lib/standins/NAME.Dockerfile) replaces which image.
declare -A recipe=(
  [python:3.12-slim]=python
  [postgres:16]=postgres
  [rabbitmq:3]=rabbitmq
  [redis:7-alpine]=redis
  [nginx:1.27]=nginx
  [haproxy:2.8]=haproxy
  [prom/prometheus:v2.53.0]=prometheus
)

# The images the project starts from, read from the files themselves so that this list cannot
# drift from them: every `image:` of the compose file except the one it builds, and every FROM
# of the Dockerfile except its own stages.
wanted_images() {
  sed -nE 's/^[[:space:]]+image:[[:space:]]*"?([^"[:space:]]+)"?.*$/\1/p' "$root/docker-compose.yml" | grep -v '\$'
  awk 'toupper($1) == "FROM" { for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; break } }' "$root/Dockerfile"
}
mapfile -t images < <(wanted_images | sort -u)
[[ ${#images[@]} -gt 0 ]] || die "found no images in docker-compose.yml and Dockerfile"
for image in "${images[@]}"; do
  [[ -n ${recipe[$image]:-} ]] || die "no stand-in recipe for $image; add one in $standins and to the table in $0"
done

"$script_dir/ensure-docker.sh"

is_standin() { [[ $(docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null) == "$1" ]]; }

work=
cleanup() { [[ -z $work ]] || rm -rf "$work"; }
trap cleanup EXIT

ensure_base() {
  docker image inspect "$base_image" >/dev/null 2>&1 && return 0
  # shellcheck source-path=SCRIPTDIR source=lib/debootstrap-image.sh
  source "$script_dir/lib/debootstrap-image.sh"
  local id
  id=$(debootstrap_import "$suite" ca-certificates "Debian $suite minbase for stand-in images ($me)" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV DEBIAN_FRONTEND=noninteractive' \
    --change 'CMD ["bash"]')
  docker tag "$id" "$base_image"
}

build_standin() { # image
  local image=$1 name=${recipe[$1]} started=$SECONDS
  ensure_base
  local context
  if [[ -z $work ]]; then
    work=$(mktemp -d)
    mkdir "$work/context"
    cp -a "$standins/." "$work/context/"
    # The python stand-in trusts what this host trusts (see python.Dockerfile).
    if [[ -r /etc/ssl/certs/ca-certificates.crt ]]; then
      cp /etc/ssl/certs/ca-certificates.crt "$work/context/"
    else
      docker run --rm "$base_image" cat /etc/ssl/certs/ca-certificates.crt >"$work/context/ca-certificates.crt"
    fi
  fi
  context=$work/context
  log "building stand-in $image from Debian $suite ($name.Dockerfile)"
  if ! docker build --quiet --tag "$image" --label "$label=$image" --build-arg "BASE=$base_image" \
    --file "$context/$name.Dockerfile" "$context" >"$work/$name.log" 2>&1; then
    tail -n 30 "$work/$name.log" >&2
    die "building the stand-in $image failed (see above)"
  fi
  log "built stand-in $image in $((SECONDS - started))s"
}

for image in "${images[@]}"; do
  if docker image inspect "$image" >/dev/null 2>&1; then
    if [[ -n $force ]] && is_standin "$image"; then
      build_standin "$image"
    else
      if is_standin "$image"; then log "using local $image (stand-in)"; else log "using local $image"; fi
    fi
    continue
  fi
  log "trying: docker pull $image"
  if timeout 30 docker pull -q "$image" >&2; then
    continue
  fi
  build_standin "$image"
done
