#!/bin/sh
# The official redis image's entrypoint contract: `redis-server [args]`, a leading
# option or a *.conf first argument means redis-server; the server runs as `redis`.
# The official build compiles protected mode off; Debian's binary has it on, so it
# is switched off here unless the command line sets it.
set -e
case "$1" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ] || [ "$1" = redis-sentinel ]; then
  case " $* " in
    *protected-mode*) ;;
    *) set -- "$@" --protected-mode no ;;
  esac
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
