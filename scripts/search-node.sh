#!/usr/bin/env bash
# Start/stop a single real Elasticsearch node for the tests and the example project.
#
#   bash scripts/search-node.sh [start|stop|status|restart|build]
#
# The node runs in-process from Maven Central jars (scripts/search-node/, built with mvn on first
# use): HTTP on 127.0.0.1:9200, single-node discovery, no security. Which line runs:
#   9.5 (needs Java 21+, e.g. /usr/lib/jvm/temurin-25-jdk-amd64): elasticsearch-py 8.x and 9.x work;
#   8.19 (Java 17):                                                elasticsearch-py 7.x/8.x only
#                                                                  (9.x clients send compatible-with=9).
# Only the server and its netty4 HTTP module are on Maven Central, so painless scripts,
# analysis-common analyzers/filters (asciifolding, english, ...), _update_by_query /
# _delete_by_query / _reindex and mapper-extras field types are absent on both lines.
# GET/HEAD / (client info()/ping()) come from our own handler; wildcard index deletes are allowed.
# Details: scripts/search-node/README.md.
#
# Environment overrides:
#   SEARCH_ES_LINE    9, 8 or auto (9 when a JDK 21+ is found)   (default auto)
#   SEARCH_HOME       state directory                           (default /var/lib/datapipe-search)
#   SEARCH_PORT       HTTP port                                 (default 9200)
#   SEARCH_TRANSPORT_PORT                                       (default 9300)
#   SEARCH_HEAP       -Xmx                                      (default 512m)
#   SEARCH_WAIT_SECS  how long start waits for green/yellow     (default 90)
#   SEARCH_JAVA_OPTS  extra JVM flags, after the defaults (word-split; e.g. -XX:TieredStopAtLevel=4)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=$ROOT/scripts/search-node
SEARCH_HOME=${SEARCH_HOME:-/var/lib/datapipe-search}
PORT=${SEARCH_PORT:-9200}
TRANSPORT_PORT=${SEARCH_TRANSPORT_PORT:-9300}
HEAP=${SEARCH_HEAP:-512m}
WAIT_SECS=${SEARCH_WAIT_SECS:-90}
STOP_GRACE_SECS=30
PID_FILE=$SEARCH_HOME/search-node.pid
LOG_FILE=$SEARCH_HOME/logs/search-node.log
BUILD_LOG=$SEARCH_HOME/logs/build.log
URL=http://127.0.0.1:$PORT
NAME=search-node PRODUCT=Elasticsearch STATE_DIR=$SEARCH_HOME
JAR_PATTERN='/target/es[0-9]+/search-node\.jar'
# shellcheck source=scripts/jvm-node-common.sh
source "$ROOT/scripts/jvm-node-common.sh"

# ---------------------------------------------------------------- Java and the ES line

# First JDK (with javac) under /usr/lib/jvm, or $JAVA_HOME, whose major version is in [$1, $2].
find_jdk() {
    local min=$1 max=$2 home major
    for home in ${JAVA_HOME:-} /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/*; do
        [[ -n $home && -x $home/bin/java && -x $home/bin/javac ]] || continue
        major=$(java_major "$home")
        [[ -n $major ]] && ((major >= min && major <= max)) && { echo "$home"; return 0; }
    done
    return 1
}

ensure_tools() {
    command -v mvn >/dev/null && command -v curl >/dev/null && find_jdk 17 99 >/dev/null && return 0
    [[ $EUID -eq 0 ]] || die "need a JDK 17+, maven and curl (apt-get install openjdk-17-jdk-headless maven curl)"
    log "installing openjdk-17-jdk-headless maven curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven curl >/dev/null
}

# Sets JDK (its home) and LINE (es8|es9).
select_line() {
    case ${SEARCH_ES_LINE:-auto} in
        9) JDK=$(find_jdk 21 99) || die "SEARCH_ES_LINE=9 needs a JDK 21+ (none under /usr/lib/jvm)"; LINE=es9 ;;
        8) JDK=$(find_jdk 17 20) || die "SEARCH_ES_LINE=8 needs JDK 17 (apt-get install openjdk-17-jdk-headless)"; LINE=es8 ;;
        auto)
            if JDK=$(find_jdk 21 99); then LINE=es9
            else JDK=$(find_jdk 17 20) || die "no JDK 17+ found"; LINE=es8; fi ;;
        *) die "SEARCH_ES_LINE must be 8, 9 or auto" ;;
    esac
    JAR=$PROJECT/target/$LINE/search-node.jar
    NODE_HOME=$SEARCH_HOME/$LINE  # separate data per line: 9.x data cannot be opened by 8.x
}

# ---------------------------------------------------------------- build
build() {
    ensure_tools
    select_line
    build_jar "$LINE" "~50 MB"
}

# ---------------------------------------------------------------- process
start() {
    if running; then
        healthy || wait_healthy
        log "already running (pid $(pid), Elasticsearch $(version)) at $URL"
        return 0
    fi
    rm -f "$PID_FILE"
    curl -s --max-time 2 -o /dev/null "$URL/" && die "something else answers on $URL (not our node); stop it or set SEARCH_PORT"
    build
    mkdir -p "$SEARCH_HOME/logs" "$NODE_HOME/tmp"
    local jvm_flags=() extra=()
    read -ra extra <<<"${SEARCH_JAVA_OPTS:-}"
    local major
    major=$(java_major "$JDK")
    # Startup on a busy 2-core box: C1 only (plenty for test-sized data, far less CPU while
    # starting) and, from Java 19 on, a class-data archive that the JVM creates/refreshes itself.
    jvm_flags+=(-XX:TieredStopAtLevel=1)
    ((major >= 19)) && jvm_flags+=(-XX:+AutoCreateSharedArchive -XX:SharedArchiveFile="$NODE_HOME/cds.jsa")
    ((major >= 23)) && jvm_flags+=(--sun-misc-unsafe-memory-access=allow)
    # ES loads zstd (index.codec=best_compression) from the distribution's lib/platform dir,
    # which Maven Central does not have: offer the system's libzstd there instead.
    local zstd
    # (awk reads all input: exiting early would SIGPIPE ldconfig and trip pipefail)
    zstd=$(ldconfig -p 2>/dev/null | awk '$1 == "libzstd.so.1" && !found {print $NF; found = 1}')
    if [[ -n $zstd ]]; then
        mkdir -p "$NODE_HOME/native"
        ln -sfn "$zstd" "$NODE_HOME/native/libzstd.so"
        jvm_flags+=(-Des.nativelibs.path="$NODE_HOME/native")
    fi
    # ...but not libvec (ES's own SIMD library): without this flag its absence disables all native access.
    jvm_flags+=(-Dorg.elasticsearch.nativeaccess.enableVectorLibrary=false)
    log "starting Elasticsearch ($LINE, $JDK) at $URL; data $NODE_HOME, log $LOG_FILE"
    # Flags follow the distribution's jvm.options where they matter for an in-process node.
    # 9>&- : the node must not inherit the lock held by this script. setsid: its own session,
    # so killing whatever started it (a test run's process group) does not kill the node.
    setsid nohup "$JDK/bin/java" -Xms256m -Xmx"$HEAP" -XX:+UseSerialGC -Xss1m \
        -XX:-OmitStackTraceInFastThrow --enable-native-access=ALL-UNNAMED "${jvm_flags[@]}" \
        -Dfile.encoding=UTF-8 -Djava.locale.providers=CLDR -Djna.nosys=true \
        -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
        -Dio.netty.recycler.maxCapacityPerThread=0 \
        -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
        -Djava.io.tmpdir="$NODE_HOME/tmp" \
        -Dsearch.http.port="$PORT" -Dsearch.transport.port="$TRANSPORT_PORT" \
        "${extra[@]}" \
        -jar "$JAR" "$NODE_HOME" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
    echo $! >"$PID_FILE"
    local t0=$SECONDS
    wait_healthy
    log "up (pid $(pid), Elasticsearch $(version)) after $((SECONDS - t0))s"
}

node_main "$@"
