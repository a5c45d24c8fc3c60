#!/usr/bin/env bash
# The project's test command (README, .ci/run). From a fresh clone it sets itself up
# (scripts/bootstrap.sh: the .venv, ZooKeeper, Redis, debootstrap), starts a real
# ZooKeeper and Redis on loopback with scripts/servers.sh, runs the suite with the
# venv's python, and stops what it started. With a compiled core (node.core.native)
# the whole suite is followed by the unit and integration tests on the pure core.
#
#   ./scripts/test.sh                   the whole suite (e2e too when Docker answers)
#   ./scripts/test.sh tests/unit -x     pytest arguments; paths replace "tests"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# Tests start `skymesh` and the venv's python by name: the venv comes first on PATH.
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
unset PYTHONHOME
started=0
if ! scripts/servers.sh status >/dev/null 2>&1; then
  scripts/servers.sh start
  started=1
fi
eval "$(scripts/servers.sh env | sed 's/^/export /')"
cleanup() { if [ "$started" = 1 ]; then scripts/servers.sh stop || true; fi; }
trap cleanup EXIT
if docker info >/dev/null 2>&1; then
  echo "test.sh: Docker engine found: the e2e tests build images (deploy/build-images.sh) and run docker compose"
else
  echo "test.sh: no Docker engine reachable: the e2e tests (tests/e2e) will be skipped"
fi
# Run "tests" unless a path (or node id) was given.
targets=(tests)
for arg in "$@"; do
  case "$arg" in -*) continue ;; esac
  if [ -e "${arg%%::*}" ]; then targets=(); break; fi
done
# The core runs compiled when scripts/bootstrap.sh could build it (node.core.native).
core="$(.venv/bin/python -m node.core.build --status 2>/dev/null || echo pure)"
echo "test.sh: the core is $core"
.venv/bin/python -m pytest "${targets[@]}" -q -p no:cacheprovider --durations=15 "$@"
# The whole suite (no arguments) with a compiled core: the unit and integration tests
# again on the pure-Python core, so both builds pass the same tests (coord's own
# integration tests, test_coord_*, never load node's core: not repeated).
if (($# == 0)) && [[ "$core" == compiled ]]; then
  echo "test.sh: the unit and integration tests again on the pure-Python core (SKYMESH_PURE=1)"
  SKYMESH_PURE=1 .venv/bin/python -m pytest tests/unit tests/integration -q -p no:cacheprovider \
    --ignore-glob='tests/integration/test_coord_*.py'
fi
