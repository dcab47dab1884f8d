#!/usr/bin/env bash
# Start/stop a single real OpenSearch node for the tests (django-opensearch-dsl Documents).
#
#   bash scripts/opensearch-node.sh [start|stop|status|restart|build]
#
# The node runs in-process from Maven Central jars (scripts/opensearch-node/, built with mvn on
# first use): OpenSearch 2.19 on Java 17, HTTP on 127.0.0.1:9201, transport 127.0.0.1:9301,
# single-node discovery, no security plugin, with the transport-netty4, lang-painless and
# analysis-common modules (so scripts and asciifolding/stemmer/ngram... work, unlike on the
# Elasticsearch node of scripts/search-node.sh). No reindex module: _update_by_query,
# _delete_by_query and _reindex are absent. Details: scripts/opensearch-node/README.md.
#
# Environment overrides:
#   OPENSEARCH_NODE_HOME       state directory                    (default /var/lib/datapipe-opensearch)
#   OPENSEARCH_NODE_PORT       HTTP port                          (default 9201)
#   OPENSEARCH_NODE_TRANSPORT_PORT                                (default 9301)
#   OPENSEARCH_NODE_HEAP       -Xmx                               (default 512m)
#   OPENSEARCH_NODE_WAIT_SECS  how long start waits for green/yellow (default 90)
#   OPENSEARCH_NODE_JAVA_OPTS  extra JVM flags, after the defaults (word-split)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=$ROOT/scripts/opensearch-node
NODE_HOME=${OPENSEARCH_NODE_HOME:-/var/lib/datapipe-opensearch}
PORT=${OPENSEARCH_NODE_PORT:-9201}
TRANSPORT_PORT=${OPENSEARCH_NODE_TRANSPORT_PORT:-9301}
HEAP=${OPENSEARCH_NODE_HEAP:-512m}
WAIT_SECS=${OPENSEARCH_NODE_WAIT_SECS:-90}
STOP_GRACE_SECS=30
PID_FILE=$NODE_HOME/opensearch-node.pid
LOG_FILE=$NODE_HOME/logs/opensearch-node.log
BUILD_LOG=$NODE_HOME/logs/build.log
JAR=$PROJECT/target/opensearch-node.jar
URL=http://127.0.0.1:$PORT

log() { echo "[opensearch-node] $*" >&2; }
die() { echo "[opensearch-node] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Java
java_major() { "$1/bin/java" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p'; }

# OpenSearch 2.19 is built for Java 17 (3.x would need 21): the first JDK 17-21 (with javac),
# $JAVA_HOME first, then /usr/lib/jvm. Sets JDK.
find_jdk() {
    local home major
    for home in ${JAVA_HOME:-} /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/*; do
        [[ -n $home && -x $home/bin/java && -x $home/bin/javac ]] || continue
        major=$(java_major "$home")
        [[ -n $major ]] && ((major >= 17 && major <= 21)) && { JDK=$home; return 0; }
    done
    return 1
}

ensure_tools() {
    command -v mvn >/dev/null && command -v curl >/dev/null && find_jdk && return 0
    [[ $EUID -eq 0 ]] || die "need JDK 17, maven and curl (apt-get install openjdk-17-jdk-headless maven curl)"
    log "installing openjdk-17-jdk-headless maven curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven curl >/dev/null
    find_jdk || die "no JDK 17-21 under /usr/lib/jvm after installing openjdk-17-jdk-headless"
}

# ---------------------------------------------------------------- build
# Up to date when the jar and its lib/ are newer than the pom and every source file.
build_is_current() {
    [[ -f $JAR && -d $PROJECT/target/lib ]] || return 1
    [[ -z "$(find "$PROJECT/pom.xml" "$PROJECT/src" -newer "$JAR" -print -quit)" ]]
}

build() {
    ensure_tools
    build_is_current && return 0
    mkdir -p "$(dirname "$BUILD_LOG")"
    log "building with $JDK (mvn package; a cold ~/.m2 downloads ~45 MB from Maven Central)"
    rm -rf "${PROJECT:?}/target/lib"  # no stale jars on the classpath after a version change
    if ! (cd "$PROJECT" && JAVA_HOME=$JDK mvn -q -B package) >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        die "maven build failed (full log: $BUILD_LOG)"
    fi
    touch "$JAR"
}

# ---------------------------------------------------------------- process
# (No `grep -q`/early-exit readers in pipes: the writer's SIGPIPE would fail them under pipefail.)
# The pid in PID_FILE is a live java process running an opensearch-node jar (from any checkout).
running() {
    local pid
    [[ -f $PID_FILE ]] && pid=$(head -n1 "$PID_FILE") && [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == java ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -E '/target/opensearch-node\.jar' >/dev/null
}

pid() { head -n1 "$PID_FILE"; }

healthy() {
    curl -sf --max-time 2 "$URL/_cluster/health" 2>/dev/null | grep -E '"status":"(green|yellow)"' >/dev/null
}

version() { curl -sf --max-time 2 "$URL/" 2>/dev/null | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p'; }

start() {
    if running; then
        healthy || wait_healthy
        log "already running (pid $(pid), OpenSearch $(version)) at $URL"
        return 0
    fi
    rm -f "$PID_FILE"
    curl -s --max-time 2 -o /dev/null "$URL/" && die "something else answers on $URL (not our node); stop it or set OPENSEARCH_NODE_PORT"
    build
    mkdir -p "$NODE_HOME/logs" "$NODE_HOME/tmp"
    local extra=()
    read -ra extra <<<"${OPENSEARCH_NODE_JAVA_OPTS:-}"
    log "starting OpenSearch ($JDK) at $URL; data $NODE_HOME, log $LOG_FILE"
    # Flags follow the distribution's jvm.options where they matter for an in-process node;
    # C1 only (-XX:TieredStopAtLevel=1): plenty for test-sized data, far less CPU while starting.
    # 9>&- : the node must not inherit the lock held by this script. setsid: its own session,
    # so killing whatever started it (a test run's process group) does not kill the node.
    setsid nohup "$JDK/bin/java" -Xms256m -Xmx"$HEAP" -XX:+UseSerialGC -Xss1m \
        -XX:TieredStopAtLevel=1 -XX:-OmitStackTraceInFastThrow \
        -Dfile.encoding=UTF-8 -Djna.nosys=true \
        -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
        -Dio.netty.recycler.maxCapacityPerThread=0 \
        -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
        -Djava.io.tmpdir="$NODE_HOME/tmp" \
        -Dopensearch.http.port="$PORT" -Dopensearch.transport.port="$TRANSPORT_PORT" \
        "${extra[@]}" \
        -jar "$JAR" "$NODE_HOME" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
    echo $! >"$PID_FILE"
    local t0=$SECONDS
    wait_healthy
    log "up (pid $(pid), OpenSearch $(version)) after $((SECONDS - t0))s"
}

fail_with_log() {
    log "$1; last log lines ($LOG_FILE):"
    tail -n 40 "$LOG_FILE" >&2 || true
    exit 1
}

wait_healthy() {
    local deadline=$((SECONDS + WAIT_SECS))
    until healthy; do
        running || { rm -f "$PID_FILE"; fail_with_log "node exited during startup"; }
        ((SECONDS < deadline)) || fail_with_log "not green/yellow after ${WAIT_SECS}s (pid $(pid) left running)"
        sleep 0.5
    done
}

stop() {
    if ! running; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    local pid deadline
    pid=$(pid)
    log "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_GRACE_SECS))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "still running after ${STOP_GRACE_SECS}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
}

status() {
    if running && healthy; then
        echo "up (pid $(pid), OpenSearch $(version)) $URL"
    elif running; then
        echo "running but not healthy (pid $(pid)) $URL"
        return 1
    else
        echo "down"
        return 3
    fi
}

# One start/stop/build at a time; the lock goes away when this script exits.
lock() {
    mkdir -p "$NODE_HOME"
    exec 9>"$NODE_HOME/.lock"
    flock -w 180 9 || die "another opensearch-node.sh holds $NODE_HOME/.lock"
}

case ${1:-start} in
    start) lock; start ;;
    stop) lock; stop ;;
    restart) lock; stop; start ;;
    status) status ;;
    build) lock; build ;;
    *) echo "usage: $0 [start|stop|status|restart|build]" >&2; exit 2 ;;
esac
