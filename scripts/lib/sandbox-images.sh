# shellcheck shell=bash
# Providing one sandbox image: keep an existing one, else try the registry, else build it from
# Debian's packages with debootstrap; tag it only once it passes its checks, run the way the
# worker runs tasks.
#
# Source this file (after lib/debootstrap-image.sh) from a script that defines log() and die(),
# then:
#
#   provide_image IMAGE FORCE VERIFY FROM_REGISTRY SUITE PACKAGES DESCRIPTION
#
# VERIFY and FROM_REGISTRY name functions: `VERIFY REF` succeeds when the image REF works;
# `FROM_REGISTRY` prints the reference of an image it made from a registry, or fails. PACKAGES
# is the debootstrap --include list of the local build. FORCE non-empty rebuilds an existing
# image.

# The worker runs tasks exactly like this: no network, nobody:nogroup, read-only root, a
# writable tmpfs on /tmp.
sandbox_run() { # image-ref [--docker-run-option=value]... command...
  local image=$1
  shift
  local options=()
  while [[ $# -gt 0 && $1 == --* ]]; do options+=("$1"); shift; done
  docker run --rm --network none --user 65534:65534 --read-only \
    --tmpfs /tmp:rw,noexec,nosuid,nodev,size=16m,mode=1777 --env HOME=/tmp \
    ${options[@]+"${options[@]}"} "$image" "$@"
}

provide_image() { # image force verify from-registry suite packages description
  local image=$1 force=$2 verify=$3 from_registry=$4 suite=$5 packages=$6 description=$7
  local old_id new_ref start=$SECONDS
  old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  if [[ -n $old_id && -z $force ]]; then
    log "image $image already exists (use --force to rebuild)"
    return 0
  fi

  if new_ref=$("$from_registry") && "$verify" "$new_ref"; then
    log "$image: from the registry ($new_ref)"
  else
    log "no usable registry image; building $image locally from Debian $suite"
    new_ref=$(debootstrap_import "$suite" "$packages" "$description ($me)" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]')
    # Tag only a verified image, so a failed --force rebuild keeps the old one usable.
    "$verify" "$new_ref" || die "the new image failed verification; $image was left unchanged"
  fi

  docker tag "$new_ref" "$image"
  if [[ -n $old_id && $old_id != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true # still used by a container: keep it
  fi
  log "provided $image ($(docker image inspect --format '{{.Size}}' "$image" |
    awk '{printf "%.0f MB", $1 / 1e6}')) in $((SECONDS - start))s"
}
