#!/usr/bin/env bash
# Build local stand-ins for the three images docker-compose.yml uses, with no registry:
#
#   skymesh-standin/debian     Debian bookworm root from `debootstrap --variant=minbase`,
#                              `docker import`ed (the base of the three below)
#   skymesh-standin/python     python:3.11-slim's contract: Debian python3.11 + venv
#   skymesh-standin/zookeeper  zookeeper:3.9's contract: Debian zookeeper + a JRE
#   skymesh-standin/redis      redis:7's contract: Debian redis-server
#
# Each image is tagged with a content hash of what built it (this script, the
# files in deploy/standin/, the Python requirements in pyproject.toml and their
# pins in deploy/constraints.txt), so a
# rerun with nothing changed only checks tags (about a second).
# Progress goes to stderr; stdout gets exactly the environment to use:
#
#   SKYMESH_PYTHON_IMAGE=skymesh-standin/python:<hash>
#   SKYMESH_ZOOKEEPER_IMAGE=skymesh-standin/zookeeper:<hash>
#   SKYMESH_REDIS_IMAGE=skymesh-standin/redis:<hash>
#
# e.g.  set -a; eval "$(deploy/build-images.sh)"; set +a; docker-compose up --build
#
# Needs root (or password-less sudo) for debootstrap, the docker CLI, python3 >= 3.11
# with pip (and access to PyPI) on the host, and HTTP access to the Debian mirror
# (SKYMESH_DEBIAN_MIRROR) from the host and from build containers. A cold run takes
# about 2.5 minutes on 2 cores. --prune removes stand-ins of older hashes.
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "$0")" && pwd)"
standin="$here/standin"
suite="${SKYMESH_DEBIAN_SUITE:-bookworm}"
mirror="${SKYMESH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
prune=0
[ "${1:-}" = "--prune" ] && prune=1

log() { printf 'build-images: %s\n' "$*" >&2; }
hash_of() { sha256sum | cut -c1-12; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# One build at a time per machine: parallel runs would debootstrap twice.
exec 9>"${TMPDIR:-/tmp}/skymesh-build-images.lock"
flock 9

# The base's hash covers how the root is made: suite, mirror and the recipe below.
base_recipe="$(sed -n '/^# --- base recipe/,/^# --- end base recipe/p' "$0")"
base_hash="$(printf '%s\n%s\n%s\n' "$suite" "$mirror" "$base_recipe" | hash_of)"
base="skymesh-standin/debian:$suite-$base_hash"

# --- base recipe (its text is hashed: edit it and the base is rebuilt)
make_base() {
  local sudo="" root
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
  root="$(mktemp -d "${TMPDIR:-/tmp}/skymesh-rootfs.XXXXXX")"
  trap "$sudo rm -rf '$root'" EXIT
  log "debootstrap --variant=minbase $suite from $mirror"
  $sudo debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2
  # Like Debian's own slim images: no docs, man pages or translations; no recommends.
  $sudo tee "$root/etc/dpkg/dpkg.cfg.d/skymesh-slim" >/dev/null <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' |
    $sudo tee "$root/etc/apt/apt.conf.d/90skymesh-slim" >/dev/null
  $sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  log "docker import -> $base"
  $sudo tar --numeric-owner -C "$root" -c . |
    docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' \
      -c "LABEL org.skymesh.standin=$base_hash" - "$base" >/dev/null
  $sudo rm -rf "$root"
  trap - EXIT
}
# --- end base recipe

# Python dependencies for the python stand-in: pip inside a build container cannot
# be assumed to reach PyPI (proxies, custom CAs), so wheels are fetched here on the
# host and baked into the image as an offline find-links directory. pip evaluates
# environment markers for the host's interpreter, so what bookworm's 3.11.2 needs
# beyond a newer host's (redis's `async-timeout; python_full_version < "3.11.3"`)
# is listed by hand, and so is Cython (deploy/Dockerfile's stage that compiles node.core).
requirements="$(python3 -c 'import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join([*deps, "setuptools>=68", "async-timeout>=4.0.3", "cython>=3.0"]))' "$here/../pyproject.toml")"
# The pins every wheel must match (deploy/constraints.txt, also used by the image's pip).
constraints="$(cat "$here/constraints.txt")"

fetch_wheels() {  # fetch_wheels DIR
  local arch platforms=() v
  arch="$(uname -m)"
  for v in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_28 manylinux_2_31 \
           manylinux_2_34 manylinux_2_36; do
    platforms+=(--platform "${v}_$arch")
  done
  log "pip download (host) -> wheels for: $(echo $requirements)"
  printf '%s\n' "$requirements" >"$1/requirements.txt"
  printf '%s\n' "$constraints" >"$1/constraints.txt"
  python3 -m pip download -q --disable-pip-version-check --dest "$1" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" \
    -r "$1/requirements.txt" -c "$1/constraints.txt" >&2
}

# build_standin NAME TAG_PREFIX: hash = base hash + this script + deploy/standin/*
# (+ the Python requirements for the python stand-in).
build_standin() {
  local name="$1" prefix="$2" h tag ctx
  h="$( { echo "$base_hash"; cat "$0"; find "$standin" -type f | LC_ALL=C sort | xargs cat;
          [ "$name" != python ] || echo "$requirements$constraints"; } | hash_of)"
  tag="skymesh-standin/$name:$prefix$h"
  if have_image "$tag"; then
    log "$tag is up to date"
  else
    log "building $tag"
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/skymesh-standin.XXXXXX")"
    trap "rm -rf '$ctx'" EXIT  # this function runs in a $(...) subshell: its own trap
    cp -a "$standin/." "$ctx/"
    mkdir "$ctx/wheels"
    [ "$name" != python ] || fetch_wheels "$ctx/wheels"
    docker build -q --force-rm -f "$ctx/$name.Dockerfile" --build-arg "BASE=$base" \
      --label "org.skymesh.standin=$h" -t "$tag" "$ctx" >&2
  fi
  printf '%s' "$tag"
}

start=$SECONDS
if have_image "$base"; then log "$base is up to date"; else make_base; fi
python="$(build_standin python 3.11-)"
zookeeper="$(build_standin zookeeper 3.8-)"
redis="$(build_standin redis 7-)"
log "done in $((SECONDS - start))s"

if [ "$prune" = 1 ]; then
  keep=" $base $python $zookeeper $redis "
  docker image ls --filter label=org.skymesh.standin --format '{{.Repository}}:{{.Tag}}' |
    while read -r img; do
      case "$img" in skymesh-standin/*) ;; *) continue ;; esac  # images built FROM them
      case "$keep" in *" $img "*) ;; *) log "removing old $img"; docker rmi "$img" >/dev/null || true ;; esac
    done
fi

printf 'SKYMESH_PYTHON_IMAGE=%s\nSKYMESH_ZOOKEEPER_IMAGE=%s\nSKYMESH_REDIS_IMAGE=%s\n' \
  "$python" "$zookeeper" "$redis"
