#!/bin/sh
# skymesh image entrypoint. No arguments: `skymesh node`, configured entirely by
# SKYMESH_* variables. A first argument that is an option (`--service ...`) goes
# to `skymesh node`; a skymesh subcommand (`health`, ...) goes to `skymesh`;
# anything else runs as given (`sh`, `python`).
#
# Two conveniences for orchestrators that mount secrets as loose files and give
# replicas no stable name (deploy/stack.yml):
#   SKYMESH_KEYS_FROM=/run/secrets  copy *.key (public), *.key_secret (secret) and
#       console.token from there into SKYMESH_KEYS_DIR, laid out and moded as
#       harbor.keys.load demands (0700 directories, 0600 files).
#   SKYMESH_ADVERTISE_VIA=host:port  advertise the local address this container
#       reaches host:port from (its overlay address), unless SKYMESH_ADVERTISE is set.
set -e
if [ -n "${SKYMESH_KEYS_FROM:-}" ]; then
  : "${SKYMESH_KEYS_DIR:?SKYMESH_KEYS_FROM needs SKYMESH_KEYS_DIR}"
  umask 077
  mkdir -p "$SKYMESH_KEYS_DIR/public" "$SKYMESH_KEYS_DIR/secret"
  chmod 700 "$SKYMESH_KEYS_DIR" "$SKYMESH_KEYS_DIR/public" "$SKYMESH_KEYS_DIR/secret"
  found=0
  for f in "$SKYMESH_KEYS_FROM"/*; do
    [ -f "$f" ] || continue
    case "$f" in
      *.key_secret) cp "$f" "$SKYMESH_KEYS_DIR/secret/" ;;
      *.key) cp "$f" "$SKYMESH_KEYS_DIR/public/" ;;
      */console.token) cp "$f" "$SKYMESH_KEYS_DIR/console.token" ;;
      *) continue ;;
    esac
    found=$((found + 1))
  done
  [ "$found" -gt 0 ] || { echo "entrypoint: no key files in $SKYMESH_KEYS_FROM" >&2; exit 1; }
  chmod 600 "$SKYMESH_KEYS_DIR"/secret/* "$SKYMESH_KEYS_DIR"/public/* 2>/dev/null || true
  [ ! -f "$SKYMESH_KEYS_DIR/console.token" ] || chmod 600 "$SKYMESH_KEYS_DIR/console.token"
  umask 022
fi
if [ -n "${SKYMESH_ADVERTISE_VIA:-}" ] && [ -z "${SKYMESH_ADVERTISE:-}" ]; then
  # Waits up to 120 s for the name: on Swarm a service's name resolves only once
  # one of its tasks is running (and healthy).
  SKYMESH_ADVERTISE="$(python -c '
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.monotonic() + 120
while True:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, int(port)))  # UDP: no packet sent, only the route chosen
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"entrypoint: cannot resolve {sys.argv[1]}: {exc}")
        time.sleep(1)
print(s.getsockname()[0])
' "$SKYMESH_ADVERTISE_VIA")" || exit 1
  export SKYMESH_ADVERTISE
fi
case "${1:-}" in
  "") set -- skymesh node ;;
  -*) set -- skymesh node "$@" ;;
  *) command -v "$1" >/dev/null 2>&1 || set -- skymesh "$@" ;;
esac
exec "$@"
