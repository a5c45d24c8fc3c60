#!/bin/sh
# skymesh-init: the compose files' one-shot `init` service (the node image, user
# skymesh). On the first `up` it generates every secret of the cluster into named
# volumes; later runs keep what exists (delete a file and rerun to rotate it:
# deploy/README.md). Nothing here is ever committed or passed on a command line.
#
#   /secrets/keys/            `skymesh keys init`: one shared CURVE cluster key, the
#                             operator key, console.token (0600)      -> nodes
#   /secrets/zk_auth          digest:skymesh:<random>: the ZooKeeper identity whose
#                             ACL guards /skymesh/<cluster>         -> nodes
#   /secrets/redis_password   <random>                              -> nodes
#   /redis-secrets/redis_password   the same password               -> Sentinels
#   /redis-secrets/redis.conf requirepass/masterauth/protected-mode  -> Redis servers
#   /zk-data/<n>/log          ZooKeeper server n's data directories (made here so
#                             the volume is owned by the unprivileged uid ZooKeeper
#                             runs as; ZooKeeper itself gets no capabilities)
#
# Random values: 32 bytes from Python's `secrets` (token_urlsafe: no quoting needed
# in a URL, a config file or a digest). Files are 0600, directories 0700.
set -eu
umask 077
secrets_dir=/secrets
redis_dir=/redis-secrets

log() { printf 'skymesh-init: %s\n' "$*"; }
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
put() {  # put FILE TEXT: write FILE atomically (a crash never leaves half a secret)
  printf '%s\n' "$2" >"$1.tmp"
  mv -f "$1.tmp" "$1"
}
keep_or_make() {  # keep_or_make FILE TEXT: FILE unless it exists already
  if [ -s "$1" ]; then log "keeping $1"; else put "$1" "$2"; log "generated $1"; fi
}

# generate() writes console.token last: its presence means a complete key set.
if [ -s "$secrets_dir/keys/console.token" ]; then
  log "keeping $secrets_dir/keys"
else
  rm -rf "$secrets_dir/keys"
  skymesh keys init "$secrets_dir/keys" >/dev/null
  log "generated $secrets_dir/keys (one shared cluster key, operator key, console token)"
fi
keep_or_make "$secrets_dir/zk_auth" "digest:skymesh:$(random)"
keep_or_make "$secrets_dir/redis_password" "$(random)"

# The Redis side is derived from the nodes' copy on every run, so rotating the
# password is: delete /secrets/redis_password, rerun init, restart (README).
password="$(cat "$secrets_dir/redis_password")"
put "$redis_dir/redis_password" "$password"
put "$redis_dir/redis.conf" "$(printf '%s\n' \
  "# written by skymesh-init from /secrets/redis_password" \
  "requirepass $password" \
  "masterauth $password" \
  "protected-mode yes")"
log "wrote $redis_dir/redis.conf and $redis_dir/redis_password"

for d in /zk-data/*/; do
  if [ -w "$d" ]; then mkdir -p "${d}log"; fi
done
log "done"
