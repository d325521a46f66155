# shellcheck shell=bash
# Build a Docker image from a Debian root filesystem made with debootstrap, for hosts that
# reach Debian's mirror but no container registry.
#
# Source this file from a script that defines log() and die(), then:
#
#   id=$(debootstrap_import SUITE PACKAGES MESSAGE [--change INSTRUCTION]...)
#
# PACKAGES is debootstrap's comma-separated --include list (may be empty); each --change is
# passed to `docker import` (ENV, CMD, ...). Prints the new image's id on stdout, progress on
# stderr. Needs root. The rootfs is built under /var/tmp and removed afterwards, also on error.
#
# Environment:
#   DEBIAN_MIRROR   mirror to use (default: the one apt uses for SUITE, else deb.debian.org)

# Make sure debootstrap and the archive keyring are installed (Debian's packages).
debootstrap_ensure_tools() {
  command -v debootstrap >/dev/null && return 0
  command -v apt-get >/dev/null || die "debootstrap is missing and apt-get is unavailable; install debootstrap"
  log "installing Debian's debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The keyring and gpgv let debootstrap check the archive's signatures.
  apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring gpgv ca-certificates >/dev/null
}

# The mirror apt already uses for a suite: it is known reachable from here, where
# deb.debian.org may not be. Prints nothing when apt's sources do not name the suite.
debootstrap_find_mirror() { # suite
  python3 - "$1" <<'EOF' 2>/dev/null || true
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

# Runs in a subshell (the parentheses), so its traps and its cleanup are its own.
debootstrap_import() ( # suite packages message [--change instruction]...
  set -euo pipefail
  local bootstrap_suite=$1 packages=$2 message=$3
  shift 3

  [[ $(id -u) -eq 0 ]] || die "building an image with debootstrap needs root; run: sudo $0"
  debootstrap_ensure_tools

  local mirror=${DEBIAN_MIRROR:-$(debootstrap_find_mirror "$bootstrap_suite")}
  mirror=${mirror:-http://deb.debian.org/debian}

  # debootstrap reads proxies only from the environment, not from apt's configuration.
  if [[ -z ${http_proxy:-} ]]; then
    eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null || true)"
    if [[ -n ${http_proxy:-} ]]; then export http_proxy; fi
  fi

  workdir=
  # shellcheck disable=SC2317 # called by the EXIT trap
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
  workdir=$(mktemp -d /var/tmp/taskservice-debootstrap.XXXXXX)
  local rootfs=$workdir/rootfs
  log "debootstrap $bootstrap_suite${packages:+ with $packages} from $mirror (a few minutes)"
  if ! debootstrap --variant=minbase ${packages:+"--include=$packages"} "$bootstrap_suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1; then
    tail -n 20 "$workdir/debootstrap.log" >&2
    [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (see above); check that $mirror is reachable, or set DEBIAN_MIRROR"
  fi

  # Trim what a container never reads; keep copyright files for the licences' sake.
  (
    cd "$rootfs"
    rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old \
      usr/share/man/* usr/share/info/* usr/share/locale/*/ var/log/* tmp/* dev/*
    find usr/share/doc -type f ! -name copyright -delete
    find usr/share/doc -type d -empty -delete
    # Headers and static libraries (scipy's pythran pulls in the -dev packages, ~200 MB): the
    # sandbox has no compiler, and nothing links against them at run time.
    rm -rf usr/include/*
    find usr/lib -name '*.a' -type f -delete
    # debootstrap copied these from the build host; Docker supplies its own at run time.
    : >etc/resolv.conf
    : >etc/hostname
  )

  log "importing the rootfs into Docker"
  tar -C "$rootfs" --numeric-owner -c . | docker import --message "$message" "$@" -
)
