#!/usr/bin/env bash
# Make sure the sandbox images exist in the local Docker engine: $SANDBOX_IMAGE (languages
# python and bash) and $SANDBOX_DATA_IMAGE (python-data: numpy, pandas, matplotlib, scipy).
#
# Each comes from a registry when one is reachable (python:3.12-slim; for the data image, that
# plus the four libraries from PyPI); otherwise it is built from Debian's packages with
# debootstrap, so hosts without registry access can still run tasks. Idempotent: existing
# images make this a quick no-op unless --force is given.
#
# Usage: build-sandbox-image.sh [--force]
# Environment:
#   SANDBOX_IMAGE          image to provide (default taskservice/sandbox-python:3)
#   SANDBOX_DATA_IMAGE     data-science image (default taskservice/sandbox-python-data:3)
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
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg'; usage: $0 [--force]" ;;
  esac
done

image=${SANDBOX_IMAGE:-taskservice/sandbox-python:3}
data_image=${SANDBOX_DATA_IMAGE:-taskservice/sandbox-python-data:3}
pull_image=${SANDBOX_PULL_IMAGE:-python:3.12-slim}
suite=${SANDBOX_DEBIAN_SUITE:-bookworm}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# shellcheck source-path=SCRIPTDIR source=lib/debootstrap-image.sh
source "$script_dir/lib/debootstrap-image.sh"
# shellcheck source-path=SCRIPTDIR source=lib/sandbox-images.sh
source "$script_dir/lib/sandbox-images.sh"

"$script_dir/ensure-docker.sh"

# The full python3 package, not python3-minimal, plus the modules Debian splits out of it
# (venv/ensurepip, distutils, lib2to3, dbm.gnu): tasks expect the whole standard library, as in
# python:3.12-slim. Only tkinter is left out.
python_packages=python3,python3-venv,python3-distutils,python3-lib2to3,python3-gdbm
data_packages=$python_packages,python3-numpy,python3-pandas,python3-matplotlib,python3-scipy

verify_python() { # image-ref
  [[ $(sandbox_run "$1" python3 -c 'import json, sqlite3, ssl; print(6*7)' 2>&1) == 42 ]] ||
    { log "python3 check failed in $1"; return 1; }
  [[ $(sandbox_run "$1" bash -c 'echo ok' 2>&1) == ok ]] ||
    { log "bash check failed in $1"; return 1; }
  [[ $(sandbox_run "$1" sh -c 'grep -q "^nobody:x:65534:65534:" /etc/passwd && grep -q "^nogroup:x:65534:" /etc/group && echo ok' 2>&1) == ok ]] ||
    { log "sh or nobody/nogroup (65534) check failed in $1"; return 1; }
}

# Everything the python image has, and the libraries at work: a computation with each, and a
# plot saved as a PNG under /tmp with the environment the python-data language gives its tasks
# (taskservice.language_table.default_languages).
verify_data() { # image-ref
  verify_python "$1" || return 1
  local check out
  check=$(
    cat <<'PY'
import numpy as np, pandas as pd, scipy.linalg, scipy.stats
import matplotlib.pyplot as plt
assert np.allclose(scipy.linalg.inv(np.eye(3) * 2), np.eye(3) / 2)
assert pd.DataFrame({"a": [1, 2, 3]})["a"].sum() == 6
assert abs(scipy.stats.norm.cdf(0) - 0.5) < 1e-12
plt.plot([1, 2, 3], [1, 4, 9])
plt.savefig("/tmp/check.png")
print(open("/tmp/check.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n")
PY
  )
  out=$(sandbox_run "$1" --env=MPLBACKEND=Agg --env=MPLCONFIGDIR=/tmp/.config/matplotlib \
    --env=XDG_CACHE_HOME=/tmp/.cache --env=OPENBLAS_NUM_THREADS=1 python3 -c "$check" 2>&1)
  [[ $out == True ]] || { log "numpy/pandas/scipy/matplotlib check failed in $1: $out"; return 1; }
}

python_from_registry() {
  log "trying: docker pull $pull_image"
  timeout 60 docker pull -q "$pull_image" >&2 || { log "pull failed"; return 1; }
  printf '%s\n' "$pull_image"
}

# The data image from the registry: the python image plus the libraries' wheels from PyPI.
data_from_registry() {
  local ref=taskservice/sandbox-python-data-build:latest
  python_from_registry >/dev/null || return 1
  log "installing numpy, pandas, matplotlib and scipy from PyPI into $pull_image"
  timeout 900 docker build -q -t "$ref" - >&2 <<DOCKERFILE || { log "docker build failed"; return 1; }
FROM $pull_image
RUN pip install --no-cache-dir numpy pandas matplotlib scipy
DOCKERFILE
  printf '%s\n' "$ref"
}

provide_image "$image" "$force" verify_python python_from_registry "$suite" "$python_packages" \
  "Debian $suite minbase + python3"
provide_image "$data_image" "$force" verify_data data_from_registry "$suite" "$data_packages" \
  "Debian $suite minbase + python3, numpy, pandas, matplotlib, scipy"
