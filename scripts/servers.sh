#!/usr/bin/env bash
# Start/stop the ZooKeeper and Redis that skymesh's integration tests and
# benchmarks use: standalone, on loopback, state and logs under one directory.
#
#   scripts/servers.sh start|stop|status|restart-redis|stop-zk|start-zk|
#                      stop-redis|start-redis|env|logs
#
# Environment: SKYMESH_SERVERS_DIR (default /tmp/skymesh-servers),
# SKYMESH_ZK_PORT (21810), SKYMESH_REDIS_PORT (63790),
# SKYMESH_SERVERS_WAIT (seconds to wait for a server, 60).
set -euo pipefail

DIR="${SKYMESH_SERVERS_DIR:-/tmp/skymesh-servers}"
ZK_PORT="${SKYMESH_ZK_PORT:-21810}"
REDIS_PORT="${SKYMESH_REDIS_PORT:-63790}"
WAIT="${SKYMESH_SERVERS_WAIT:-60}"
ZK_DIR="$DIR/zookeeper"
REDIS_DIR="$DIR/redis"
ZK_PID="$ZK_DIR/zookeeper.pid"
REDIS_PID="$REDIS_DIR/redis.pid"
ZK_JAR=/usr/share/java/zookeeper.jar
JAVA="${JAVA:-/usr/bin/java}"

log() { echo "servers.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_packages() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [[ -f "$ZK_JAR" ]] || missing+=(zookeeper)
    [[ -x "$JAVA" ]] || command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
    [[ -x "$JAVA" ]] || JAVA="$(command -v java)"
}

running() {  # running PID: exists and is not a zombie (a reparented daemon that
    # exited stays a zombie where PID 1 does not reap, e.g. a container without init)
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    [[ "${stat##*) }" != Z* ]]
}

alive() {  # alive PIDFILE: the recorded process is running
    [[ -f "$1" ]] && running "$(cat "$1")"
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME: TERM, wait, then KILL
    local pidfile="$1" name="$2" pid i
    if ! alive "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        log "$name ($pid) ignored TERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
        while running "$pid"; do sleep 0.1; done
    fi
    rm -f "$pidfile"
    log "$name stopped"
}

zk_ok() {  # ZooKeeper answers "imok" to ruok
    local reply
    reply="$( { exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf ruok >&3 \
        && timeout 2 cat <&3; } 2>/dev/null )" || return 1
    [[ "$reply" == imok ]]
}

redis_ok() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

wait_until() {  # wait_until CHECK NAME LOGFILE PIDFILE
    local check="$1" name="$2" logfile="$3" pidfile="$4" deadline=$((SECONDS + WAIT))
    while ! "$check"; do
        if ! alive "$pidfile"; then
            log "$name exited during start; last log lines:"
            tail -n 30 "$logfile" >&2 || true
            die "$name did not start"
        fi
        if ((SECONDS >= deadline)); then
            log "$name not answering on its port after ${WAIT}s; last log lines:"
            tail -n 30 "$logfile" >&2 || true
            die "$name did not start in time"
        fi
        sleep 0.2
    done
}

start_zk() {
    mkdir -p "$ZK_DIR/data"
    if alive "$ZK_PID"; then
        wait_until zk_ok zookeeper "$ZK_DIR/zookeeper.log" "$ZK_PID"
        return 0
    fi
    if zk_ok; then
        # Ours but its pidfile was lost (e.g. removed by a racing older script): adopt it.
        local pid
        pid="$(pgrep -f -o "QuorumPeerMain $ZK_DIR/zoo.cfg" 2>/dev/null || true)"
        [[ -n "$pid" ]] || die "something else already answers on 127.0.0.1:$ZK_PORT"
        echo "$pid" >"$ZK_PID"
        log "adopted running zookeeper (pid $pid)"
        return 0
    fi
    # Small ticks so tests can use short session timeouts (min = 2 * tickTime).
    cat >"$ZK_DIR/zoo.cfg" <<EOF
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
initLimit=10
syncLimit=5
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr,mntr,cons,dump,wchs,wchc
autopurge.purgeInterval=1
EOF
    local cp="$ZK_JAR"
    [[ -f /usr/share/java/slf4j-simple.jar ]] && cp="$cp:/usr/share/java/slf4j-simple.jar"
    setsid "$JAVA" -Xmx256m -XX:+UseSerialGC \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
        -Dzookeeper.jmx.log4j.disable=true \
        -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_DIR/zoo.cfg" \
        >>"$ZK_DIR/zookeeper.log" 2>&1 </dev/null 9>&- &
    echo $! >"$ZK_PID"
    wait_until zk_ok zookeeper "$ZK_DIR/zookeeper.log" "$ZK_PID"
    log "zookeeper up on 127.0.0.1:$ZK_PORT (pid $(cat "$ZK_PID"))"
}

start_redis() {
    mkdir -p "$REDIS_DIR"
    if alive "$REDIS_PID"; then
        wait_until redis_ok redis "$REDIS_DIR/redis.log" "$REDIS_PID"
        return 0
    fi
    if redis_ok; then
        local pid dir
        dir="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get dir 2>/dev/null | tail -n 1)"
        pid="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server 2>/dev/null \
            | sed -n 's/^process_id:\([0-9]*\).*/\1/p')"
        [[ "$dir" == "$REDIS_DIR" && -n "$pid" ]] \
            || die "something else already answers on 127.0.0.1:$REDIS_PORT"
        echo "$pid" >"$REDIS_PID"
        log "adopted running redis (pid $pid)"
        return 0
    fi
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" \
        --save "" --appendonly no --daemonize yes --pidfile "$REDIS_PID" \
        --logfile "$REDIS_DIR/redis.log" --protected-mode yes 9>&-
    local i
    for ((i = 0; i < 50; i++)); do [[ -s "$REDIS_PID" ]] && break; sleep 0.1; done
    [[ -s "$REDIS_PID" ]] || { tail -n 30 "$REDIS_DIR/redis.log" >&2 || true; die "redis did not write its pidfile"; }
    wait_until redis_ok redis "$REDIS_DIR/redis.log" "$REDIS_PID"
    log "redis up on 127.0.0.1:$REDIS_PORT (pid $(cat "$REDIS_PID"))"
}

print_env() {
    echo "SKYMESH_ZK_HOSTS=127.0.0.1:$ZK_PORT"
    echo "SKYMESH_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

status() {
    local rc=0
    if alive "$ZK_PID" && zk_ok; then echo "zookeeper: up (pid $(cat "$ZK_PID"))"
    else echo "zookeeper: down"; rc=1; fi
    if alive "$REDIS_PID" && redis_ok; then echo "redis: up (pid $(cat "$REDIS_PID"))"
    else echo "redis: down"; rc=1; fi
    return "$rc"
}

case "${1:-}" in
    start | stop | restart-redis | stop-redis | start-redis | stop-zk | start-zk)
        # One operation at a time: concurrent test sessions share this state dir.
        # Servers are started with fd 9 closed so they never hold this lock.
        mkdir -p "$DIR"
        exec 9>"$DIR/.lock"
        flock -w 300 9 || die "timed out waiting for $DIR/.lock"
        ;;
esac

case "${1:-}" in
    start) ensure_packages; start_zk; start_redis ;;
    stop) stop_pidfile "$REDIS_PID" redis; stop_pidfile "$ZK_PID" zookeeper ;;
    status) status ;;
    restart-redis) stop_pidfile "$REDIS_PID" redis; start_redis ;;
    stop-redis) stop_pidfile "$REDIS_PID" redis ;;
    start-redis) ensure_packages; start_redis ;;
    stop-zk) stop_pidfile "$ZK_PID" zookeeper ;;
    start-zk) ensure_packages; start_zk ;;
    env) print_env ;;
    logs) echo "$ZK_DIR/zookeeper.log"; echo "$REDIS_DIR/redis.log" ;;
    *) echo "usage: $0 start|stop|status|restart-redis|stop-redis|start-redis|stop-zk|start-zk|env|logs" >&2
       exit 2 ;;
esac
