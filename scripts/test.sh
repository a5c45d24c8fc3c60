#!/usr/bin/env bash
# The project's test command (README, .ci/run): starts a real ZooKeeper and Redis on
# loopback with scripts/servers.sh, runs the whole suite, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
started=0
if [ -x scripts/servers.sh ]; then
  if ! scripts/servers.sh status >/dev/null 2>&1; then
    scripts/servers.sh start
    started=1
  fi
  eval "$(scripts/servers.sh env | sed 's/^/export /')"
fi
cleanup() { if [ "$started" = 1 ]; then scripts/servers.sh stop || true; fi; }
trap cleanup EXIT
if docker info >/dev/null 2>&1; then
  echo "test.sh: Docker engine found: the e2e tests build images (deploy/build-images.sh) and run docker compose"
else
  echo "test.sh: no Docker engine reachable: the e2e tests (tests/e2e) will be skipped"
fi
python3 -m pytest tests -q -p no:cacheprovider "$@"
