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
NAME=opensearch-node PRODUCT=OpenSearch STATE_DIR=$NODE_HOME
JAR_PATTERN='/target/opensearch-node\.jar'
# shellcheck source=scripts/jvm-node-common.sh
source "$ROOT/scripts/jvm-node-common.sh"

# ---------------------------------------------------------------- Java
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
build() {
    ensure_tools
    build_jar "OpenSearch" "~45 MB"
}

# ---------------------------------------------------------------- process
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

node_main "$@"
