#!/usr/bin/env bash
# Run the compose cluster on a machine with no registry, in one command: build the
# local stand-ins of the three base images (deploy/build-images.sh, about a second
# when nothing changed), export the image variables it prints, then
# `docker compose up --build` (or docker-compose 1.29).
#
#   deploy/up.sh                                 docker-compose.yml, in the foreground
#   deploy/up.sh -d                              any `up` options go to compose up
#   deploy/up.sh -f docker-compose.ha.yml -d     leading -f FILE pick the compose file
#
# SKYMESH_COMPOSE forces the compose command (e.g. "docker-compose").
set -euo pipefail
cd "$(dirname "$0")/.."

files=()
while [ "$#" -ge 2 ] && { [ "$1" = -f ] || [ "$1" = --file ]; }; do
  files+=(-f "$2")
  shift 2
done

if [ -n "${SKYMESH_COMPOSE:-}" ]; then
  read -r -a compose <<<"$SKYMESH_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "deploy/up.sh: no docker compose or docker-compose found (scripts/bootstrap.sh installs docker-compose)" >&2
  exit 1
fi

# build-images.sh runs `python3 -m pip download` on the host: the project venv has pip.
if [ -x .venv/bin/python3 ]; then PATH="$PWD/.venv/bin:$PATH"; fi
images="$(deploy/build-images.sh)"
set -a
eval "$images"
set +a
exec "${compose[@]}" "${files[@]}" up --build "$@"
