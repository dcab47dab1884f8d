# shellcheck shell=bash
# Shared by scripts/search-node.sh and scripts/opensearch-node.sh (sourced, not run): building
# a Maven project into a jar, and the life cycle of the one in-process engine node it runs.
#
# The sourcing script sets, before calling anything here:
#   NAME       its name in messages and locks (search-node, opensearch-node)
#   PRODUCT    what answers on URL (Elasticsearch, OpenSearch)
#   PROJECT    the Maven project; JAR the jar `mvn package` builds (its dependencies in lib/
#              next to it); JAR_PATTERN an ERE matching that jar in a process's command line
#   STATE_DIR  holds the lock; PID_FILE, LOG_FILE, BUILD_LOG
#   URL, WAIT_SECS, STOP_GRACE_SECS; JDK once a JDK is chosen
# and defines start() and build().
# (No `grep -q`/early-exit readers in pipes: the writer's SIGPIPE would fail them under pipefail.)

log() { echo "[$NAME] $*" >&2; }
die() { echo "[$NAME] ERROR: $*" >&2; exit 1; }

java_major() { "$1/bin/java" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p'; }

# ---------------------------------------------------------------- build
# Up to date when the jar and its lib/ are newer than the pom and every source file.
build_is_current() {
    [[ -f $JAR && -d $(dirname "$JAR")/lib ]] || return 1
    [[ -z "$(find "$PROJECT/pom.xml" "$PROJECT/src" -newer "$JAR" -print -quit)" ]]
}

# mvn package with $JDK unless the jar is current. $1: what is built, $2: a cold download size.
build_jar() {
    build_is_current && return 0
    mkdir -p "$(dirname "$BUILD_LOG")"
    log "building $1 with $JDK (mvn package; a cold ~/.m2 downloads $2 from Maven Central)"
    local libs
    libs=$(dirname "${JAR:?}")/lib
    rm -rf "${libs:?}"  # no stale jars on the classpath after a version change
    if ! (cd "$PROJECT" && JAVA_HOME=$JDK mvn -q -B package) >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        die "maven build failed (full log: $BUILD_LOG)"
    fi
    touch "$JAR"
}

# ---------------------------------------------------------------- process
# The pid in PID_FILE is a live java process running our jar (from any checkout).
running() {
    local pid
    [[ -f $PID_FILE ]] && pid=$(head -n1 "$PID_FILE") && [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == java ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -E "$JAR_PATTERN" >/dev/null
}

pid() { head -n1 "$PID_FILE"; }

healthy() {
    curl -sf --max-time 2 "$URL/_cluster/health" 2>/dev/null | grep -E '"status":"(green|yellow)"' >/dev/null
}

version() { curl -sf --max-time 2 "$URL/" 2>/dev/null | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p'; }

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
        echo "up (pid $(pid), $PRODUCT $(version)) $URL"
    elif running; then
        echo "running but not healthy (pid $(pid)) $URL"
        return 1
    else
        echo "down"
        return 3
    fi
}

# One start/stop/build at a time; the lock goes away when the script exits.
lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 180 9 || die "another $NAME.sh holds $STATE_DIR/.lock"
}

node_main() {
    case ${1:-start} in
        start) lock; start ;;
        stop) lock; stop ;;
        restart) lock; stop; start ;;
        status) status ;;
        build) lock; build ;;
        *) echo "usage: $0 [start|stop|status|restart|build]" >&2; exit 2 ;;
    esac
}
