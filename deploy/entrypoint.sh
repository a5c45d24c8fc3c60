#!/bin/sh
# skymesh image entrypoint. No arguments: `skymesh node`, configured entirely by
# SKYMESH_* variables. A first argument that is an option (`--service ...`) goes
# to `skymesh node`; a skymesh subcommand (`health`, ...) goes to `skymesh`;
# anything else runs as given (`sh`, `python`).
set -e
case "${1:-}" in
  "") set -- skymesh node ;;
  -*) set -- skymesh node "$@" ;;
  *) command -v "$1" >/dev/null 2>&1 || set -- skymesh "$@" ;;
esac
exec "$@"
