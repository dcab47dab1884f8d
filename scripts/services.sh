#!/usr/bin/env bash
# Start/stop the real servers the test suite needs (idempotent; run as root on Debian 12).
#
#   bash scripts/services.sh [start|stop|status]
#   bash scripts/services.sh start-postgres|stop-postgres|start-replica|stop-replica
#   bash scripts/services.sh start-mariadb|stop-mariadb|start-mariadb-replica|stop-mariadb-replica
#   bash scripts/services.sh start-redis|stop-redis
#   bash scripts/services.sh start-search|stop-search|start-opensearch|stop-opensearch
#
# PostgreSQL 15 primary 127.0.0.1:5432 and hot standby 127.0.0.1:5433 (trust auth),
# MariaDB 127.0.0.1:3306 (root, empty password; binary log on) and its replica 127.0.0.1:3307
# (GTID replication), Redis 127.0.0.1:6379, and two search engines:
# an Elasticsearch node on 127.0.0.1:9200 run by scripts/search-node.sh and an OpenSearch node
# on 127.0.0.1:9201 run by scripts/opensearch-node.sh (the first start of each builds its Maven
# project, ~10-30 s; see scripts/search-node/README.md and scripts/opensearch-node/README.md).
set -euo pipefail

PG_VER=15
PG_BIN=/usr/lib/postgresql/$PG_VER/bin
PG_CONF_DIR=/etc/postgresql/$PG_VER/main
PG_DATA=/var/lib/postgresql/$PG_VER/main
PG_LOG=/var/log/postgresql/postgresql-$PG_VER-main.log
PG_PORT=5432
REPLICA_PORT=5433
REPLICA_DIR=/var/lib/postgresql/$PG_VER/replica
REPLICA_LOG=/var/log/postgresql/postgresql-$PG_VER-replica.log
PG_SOCK_DIR=/var/run/postgresql
MYSQL_PORT=3306
MYSQL_RUN=/run/mysqld
MYSQL_PID=$MYSQL_RUN/mysqld.pid
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
MYSQL_LOG=/var/log/mysql/error.log
MYSQL_REPLICA_PORT=3307
MYSQL_REPLICA_DIR=/var/lib/mysql-replica
MYSQL_REPLICA_PID=$MYSQL_RUN/mysqld-replica.pid
MYSQL_REPLICA_SOCK=$MYSQL_RUN/mysqld-replica.sock
MYSQL_REPLICA_LOG=/var/log/mysql/replica.log
REDIS_PORT=6379
SEARCH_NODE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/search-node.sh"
SEARCH_PORT=${SEARCH_PORT:-9200}
OPENSEARCH_NODE="$(dirname "$SEARCH_NODE")/opensearch-node.sh"
OPENSEARCH_PORT=${OPENSEARCH_NODE_PORT:-9201}
WAIT_SECS=${SERVICES_WAIT_SECS:-30}
PACKAGES=("postgresql-$PG_VER" "postgresql-client-$PG_VER" mariadb-server mariadb-client
          redis-server redis-tools libmariadb-dev pkg-config build-essential)

log() { echo "[services] $*" >&2; }
die() { echo "[services] ERROR: $*" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

# wait_for SECONDS WHAT CMD...: poll CMD every 0.2s until it succeeds or time runs out.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "timed out after ${secs}s waiting for $what"; return 1; }
        sleep 0.2
    done
}

# pid_alive PIDFILE NAME: the pid on the file's first line is a live (not zombie) NAME process.
pid_alive() {
    local pid stat
    [[ -f $1 ]] && pid=$(head -n1 "$1") && [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

# write_file PATH CONTENT: rewrite only when the content differs (then set CHANGED=1).
CHANGED=
write_file() {
    [[ -f $1 && "$(cat "$1")" == "$2" ]] && return 0
    printf '%s\n' "$2" >"$1"
    CHANGED=1
}

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $EUID -eq 0 ]] || die "missing packages (${missing[*]}) and not root"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- PostgreSQL primary
pg_running() { pid_alive "$PG_DATA/postmaster.pid" postgres; }
# pg_ctl directly: pg_ctlcluster adds ~2s of polling to every start.
pg_ctl_primary() {
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -s -w -t "$WAIT_SECS" -m fast \
        -o "-c config_file=$PG_CONF_DIR/postgresql.conf" "$@" 9>&-
}
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; }
pg_sql() { psql -X -q -tA -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"; }

# Remove postgres lock files whose process is gone (e.g. after the machine killed everything);
# postgres refuses to start while their pid is still a zombie.
clear_stale_pid() {
    local f
    for f in "$1/postmaster.pid" "$PG_SOCK_DIR/.s.PGSQL.$2.lock"; do
        [[ -f $f ]] && ! pid_alive "$f" postgres && { log "removing stale $f"; rm -f "$f"; }
    done
    return 0
}

configure_postgres() {
    [[ -d $PG_CONF_DIR ]] || { log "creating cluster $PG_VER/main"; pg_createcluster "$PG_VER" main >/dev/null; }
    install -d -o postgres -g postgres -m 2775 "$PG_SOCK_DIR"
    install -d -o postgres -g postgres "$PG_CONF_DIR/conf.d"
    touch "$PG_LOG" && chown postgres:adm "$PG_LOG"
    write_file "$PG_CONF_DIR/conf.d/datapipe.conf" "# managed by scripts/services.sh
listen_addresses = 'localhost'
port = $PG_PORT
wal_level = replica
max_wal_senders = 10
wal_keep_size = '128MB'
hot_standby_feedback = on"
    write_file "$PG_CONF_DIR/pg_hba.conf" "# managed by scripts/services.sh
local   all          all                 peer
host    all          all   127.0.0.1/32  trust
host    all          all   ::1/128       trust
local   replication  all                 peer
host    replication  all   127.0.0.1/32  trust
host    replication  all   ::1/128       trust"
}

start_postgres() {
    configure_postgres
    if pg_running && [[ -n $CHANGED ]]; then
        # Pick up config edits: reload, and restart only if a setting needs it.
        as_pg psql -X -q -tA -p "$PG_PORT" -c 'SELECT pg_reload_conf()' >/dev/null
        sleep 0.2
        if [[ "$(as_pg psql -X -tA -p "$PG_PORT" -c 'SELECT count(*) FROM pg_settings WHERE pending_restart')" != 0 ]]; then
            log "restarting postgres to apply config"
            pg_ctl_primary restart
        fi
    elif ! pg_running; then
        clear_stale_pid "$PG_DATA" "$PG_PORT"
        log "starting postgres on 127.0.0.1:$PG_PORT"
        pg_ctl_primary start || die "postgres failed to start; see $PG_LOG"
    fi
    wait_for "$WAIT_SECS" "postgres on :$PG_PORT" pg_ready || die "postgres not accepting connections"
    [[ "$(pg_sql "$PG_PORT" "SELECT 1 FROM pg_database WHERE datname = 'datapipe'")" == 1 ]] \
        || pg_sql "$PG_PORT" 'CREATE DATABASE datapipe' >/dev/null
}

stop_postgres() {
    pg_running || return 0
    log "stopping postgres"
    pg_ctl_primary stop
}

# ---------------------------------------------------------------- PostgreSQL hot standby
replica_running() { pid_alive "$REPLICA_DIR/postmaster.pid" postgres; }
replica_streaming() {
    [[ "$(pg_sql "$REPLICA_PORT" 'SELECT pg_is_in_recovery()')" == t ]] &&
    [[ "$(pg_sql "$REPLICA_PORT" 'SELECT status FROM pg_stat_wal_receiver')" == streaming ]]
}
sysid() { "$PG_BIN/pg_controldata" "$1" 2>/dev/null | awk -F: '/system identifier/ {gsub(/ /, "", $2); print $2}'; }

stop_replica() {
    replica_running || return 0
    log "stopping replica"
    as_pg "$PG_BIN/pg_ctl" -D "$REPLICA_DIR" stop -m fast -w >/dev/null
}

build_replica() {
    stop_replica
    log "building replica in $REPLICA_DIR (pg_basebackup from :$PG_PORT)"
    rm -rf "$REPLICA_DIR"
    install -d -o postgres -g postgres -m 700 "$REPLICA_DIR"
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$REPLICA_DIR" \
        -R -X stream --checkpoint=fast || die "pg_basebackup failed"
    as_pg tee "$REPLICA_DIR/postgresql.conf" >/dev/null <<EOF
# managed by scripts/services.sh
cluster_name = '$PG_VER/replica'
listen_addresses = '127.0.0.1'
port = $REPLICA_PORT
unix_socket_directories = '$PG_SOCK_DIR'
max_connections = 100
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
wal_retrieve_retry_interval = '200ms'
EOF
    as_pg tee "$REPLICA_DIR/pg_hba.conf" >/dev/null <<'EOF'
local all         all              trust
host  all         all  127.0.0.1/32 trust
host  all         all  ::1/128      trust
host  replication all  127.0.0.1/32 trust
EOF
    as_pg touch "$REPLICA_DIR/pg_ident.conf"
}

# Start (building if needed) and, when the primary is up, check that the standby streams.
try_start_replica() {
    if ! replica_running; then
        clear_stale_pid "$REPLICA_DIR" "$REPLICA_PORT"
        as_pg "$PG_BIN/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_LOG" -w -t "$WAIT_SECS" start >/dev/null 9>&- || return 1
    fi
    wait_for "$WAIT_SECS" "replica on :$REPLICA_PORT" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$REPLICA_PORT" || return 1
    pg_ready || { log "primary is down: replica started without checking streaming"; return 0; }
    wait_for 15 "replica streaming" replica_streaming
}

start_replica() {
    install -d -o postgres -g postgres -m 2775 "$PG_SOCK_DIR"
    touch "$REPLICA_LOG" && chown postgres:postgres "$REPLICA_LOG"
    local rebuild=
    if [[ ! -f $REPLICA_DIR/PG_VERSION || ! -f $REPLICA_DIR/standby.signal ]]; then
        rebuild=1
    elif [[ -z "$(sysid "$REPLICA_DIR")" ]]; then
        log "replica data is damaged"; rebuild=1
    elif pg_ready && [[ "$(sysid "$REPLICA_DIR")" != "$(sysid "$PG_DATA")" ]]; then
        log "replica belongs to another primary (re-initialised?)"; rebuild=1
    fi
    if [[ -z $rebuild ]]; then
        replica_running || log "starting replica on 127.0.0.1:$REPLICA_PORT"
        try_start_replica && return 0
        log "replica is broken; rebuilding"
    fi
    pg_ready || start_postgres
    build_replica
    log "starting replica on 127.0.0.1:$REPLICA_PORT"
    try_start_replica || die "replica failed to start/stream; see $REPLICA_LOG"
}

# ---------------------------------------------------------------- MariaDB
mysql_pid() { pid_alive "$MYSQL_PID" mariadbd && head -n1 "$MYSQL_PID"; }
mysql_ready() { mysqladmin --no-defaults --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uroot ping; }

start_mariadb() {
    install -d -o mysql -g mysql -m 755 "$MYSQL_RUN"
    install -d -o mysql -g adm -m 2750 "$(dirname "$MYSQL_LOG")"
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising /var/lib/mysql"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    if mysql_pid >/dev/null && mysql_ready >/dev/null 2>&1 \
            && [[ "$(mysql_sql -N -e 'SELECT @@log_bin' 2>/dev/null)" == 0 ]]; then
        log "restarting mariadb with its binary log (the replica reads it)"
        stop_mariadb
    fi
    if ! mysql_pid >/dev/null; then
        log "starting mariadb on 127.0.0.1:$MYSQL_PORT"
        setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
            --pid-file="$MYSQL_PID" --socket="$MYSQL_SOCK" --log-error="$MYSQL_LOG" \
            --innodb-flush-log-at-trx-commit=2 --server-id=1 --log-bin=mysql-bin \
            --binlog-format=ROW --expire-logs-days=1 </dev/null >/dev/null 2>&1 9>&- &
    fi
    wait_for "$WAIT_SECS" "mariadb on :$MYSQL_PORT" mysql_ready || die "mariadb not accepting connections; see $MYSQL_LOG"
    # Root over TCP with an empty password (Debian only allows unix_socket auth); runs over the socket.
    mysql_root_setup mysql_sql || die "mariadb setup failed"
    mariadb --no-defaults -h127.0.0.1 -P"$MYSQL_PORT" -uroot -e 'SELECT 1' >/dev/null \
        || die "root cannot log in over TCP"
}

mysql_sql() { mariadb --no-defaults --protocol=socket -S "$MYSQL_SOCK" -uroot "$@"; }

# mysql_root_setup CLIENT: root over TCP with an empty password, and the archive database.
mysql_root_setup() {
    "$1" <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS datapipe_archive CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
SQL
}

# stop_mariadbd PIDFILE WHAT: TERM the mariadbd of PIDFILE; KILL it if it outlives WAIT_SECS.
stop_mariadbd() {
    local pid
    pid_alive "$1" mariadbd || return 0
    pid=$(head -n1 "$1")
    log "stopping $2"
    kill -TERM "$pid"
    if ! wait_for "$WAIT_SECS" "$2 to exit" mariadbd_gone "$1"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

mariadbd_gone() { ! pid_alive "$1" mariadbd; }
stop_mariadb() { stop_mariadbd "$MYSQL_PID" mariadb; }

# ---------------------------------------------------------------- MariaDB replica
# A second mariadbd replicating the first by GTID: what a MySQL/TiDB read replica looks like to
# the lag probe (SHOW SLAVE STATUS). Seeded from a dump of the primary's databases.
replica_sql() { mariadb --no-defaults --protocol=socket -S "$MYSQL_REPLICA_SOCK" -uroot "$@"; }
mysql_replica_pid() { pid_alive "$MYSQL_REPLICA_PID" mariadbd && head -n1 "$MYSQL_REPLICA_PID"; }
mysql_replica_ready() { mysqladmin --no-defaults --protocol=tcp -h127.0.0.1 -P"$MYSQL_REPLICA_PORT" -uroot ping; }
mysql_replicating() {
    [[ "$(replica_sql -e 'SHOW SLAVE STATUS\G' 2>/dev/null | grep -cE 'Slave_(IO|SQL)_Running: Yes')" == 2 ]]
}

seed_mariadb_replica() {
    log "seeding the mariadb replica from a dump of the primary"
    local dbs dump pos
    dbs=$(mysql_sql -N -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name
          NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')")
    replica_sql -e "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF;"
    for db in $(replica_sql -N -e "SELECT schema_name FROM information_schema.schemata WHERE
                schema_name NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"); do
        replica_sql -e "DROP DATABASE \`$db\`"
    done
    dump=$(mktemp)
    # shellcheck disable=SC2086  # one word per database
    mariadb-dump --no-defaults --protocol=socket -S "$MYSQL_SOCK" -uroot --single-transaction \
        --gtid --master-data=2 --routines --events --databases $dbs >"$dump" \
        || { rm -f "$dump"; die "dumping the primary failed"; }
    pos=$(sed -n "s/^-- SET GLOBAL gtid_slave_pos='\([^']*\)';.*/\1/p" "$dump" | head -n1)
    replica_sql <"$dump" || { rm -f "$dump"; die "loading the dump into the replica failed"; }
    rm -f "$dump"
    replica_sql <<SQL || die "configuring replication failed"
SET GLOBAL gtid_slave_pos = '$pos';
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MYSQL_PORT, MASTER_USER='root',
    MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
START SLAVE;
SET GLOBAL read_only = ON;
SQL
}

start_mariadb_replica() {
    mysql_ready >/dev/null 2>&1 || start_mariadb
    install -d -o mysql -g mysql -m 755 "$MYSQL_RUN"
    local fresh=
    if [[ ! -d $MYSQL_REPLICA_DIR/mysql ]]; then
        log "initialising $MYSQL_REPLICA_DIR"
        rm -rf "$MYSQL_REPLICA_DIR"
        mariadb-install-db --user=mysql --datadir="$MYSQL_REPLICA_DIR" >/dev/null 2>&1 \
            || die "mariadb-install-db failed for $MYSQL_REPLICA_DIR"
        fresh=1
    fi
    if ! mysql_replica_pid >/dev/null; then
        log "starting the mariadb replica on 127.0.0.1:$MYSQL_REPLICA_PORT"
        setsid /usr/sbin/mariadbd --user=mysql --datadir="$MYSQL_REPLICA_DIR" \
            --bind-address=127.0.0.1 --port="$MYSQL_REPLICA_PORT" --pid-file="$MYSQL_REPLICA_PID" \
            --socket="$MYSQL_REPLICA_SOCK" --log-error="$MYSQL_REPLICA_LOG" --server-id=2 \
            --relay-log=relay-bin --read-only --innodb-flush-log-at-trx-commit=2 \
            </dev/null >/dev/null 2>&1 9>&- &
    fi
    wait_for "$WAIT_SECS" "mariadb replica on :$MYSQL_REPLICA_PORT" mysql_replica_ready \
        || die "mariadb replica not accepting connections; see $MYSQL_REPLICA_LOG"
    [[ -n $fresh ]] && { mysql_root_setup replica_sql || die "mariadb replica setup failed"; }
    if [[ -n $fresh ]] || ! wait_for 10 "the mariadb replica to replicate" mysql_replicating; then
        seed_mariadb_replica
        wait_for "$WAIT_SECS" "the mariadb replica to replicate" mysql_replicating \
            || die "the mariadb replica does not replicate; see $MYSQL_REPLICA_LOG"
    fi
}

stop_mariadb_replica() { stop_mariadbd "$MYSQL_REPLICA_PID" "the mariadb replica"; }

# ---------------------------------------------------------------- Redis
redis_ready() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
redis_gone() { ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping; }

start_redis() {
    if ! redis_ready; then
        log "starting redis on 127.0.0.1:$REDIS_PORT"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
            --dir /tmp --pidfile "/run/redis-$REDIS_PORT.pid" --logfile "/tmp/redis-$REDIS_PORT.log" 9>&-
    fi
    wait_for "$WAIT_SECS" "redis on :$REDIS_PORT" redis_ready || die "redis not answering; see /tmp/redis-$REDIS_PORT.log"
}

stop_redis() {
    redis_ready || return 0
    log "stopping redis"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    wait_for 10 "redis to exit" redis_gone || die "redis did not stop"
}

# ---------------------------------------------------------------- search engines
# scripts/search-node.sh and scripts/opensearch-node.sh own their nodes (each its own lock, pid
# file and log); fd 9 (our lock) is not passed on.
start_search() { bash "$SEARCH_NODE" start 9>&-; }
stop_search() { bash "$SEARCH_NODE" stop 9>&-; }
start_opensearch() { bash "$OPENSEARCH_NODE" start 9>&-; }
stop_opensearch() { bash "$OPENSEARCH_NODE" stop 9>&-; }

# node_state SCRIPT ENGINE: "up (Elasticsearch 9.5.3)", "starting (not healthy yet)" or "down".
node_state() {
    local out rc=0
    out=$(bash "$1" status 9>&- 2>/dev/null) || rc=$?
    case $rc in
        0) echo "up ($2 $(sed -n "s/.*$2 \([^)]*\)).*/\1/p" <<<"$out"))" ;;
        1) echo "starting (not healthy yet)" ;;
        *) echo down ;;
    esac
}

# ---------------------------------------------------------------- commands
# One line per service; exit status 3 when any is down.
status() {
    local down=0 svc port state
    for svc in postgres replica mariadb mariadb-replica redis search opensearch; do
        case $svc in
            postgres) port=$PG_PORT; pg_ready && state=up || state=down ;;
            replica) port=$REPLICA_PORT; state=down
                     replica_running && state="up (not streaming)"
                     [[ $state != down ]] && replica_streaming 2>/dev/null && state="up (streaming)" ;;
            mariadb) port=$MYSQL_PORT; mysql_ready >/dev/null 2>&1 && state=up || state=down ;;
            mariadb-replica) port=$MYSQL_REPLICA_PORT; state=down
                     mysql_replica_ready >/dev/null 2>&1 && state="up (not replicating)"
                     [[ $state != down ]] && mysql_replicating && state="up (replicating)" ;;
            redis) port=$REDIS_PORT; redis_ready && state=up || state=down ;;
            search) port=$SEARCH_PORT; state=$(node_state "$SEARCH_NODE" Elasticsearch) ;;
            opensearch) port=$OPENSEARCH_PORT; state=$(node_state "$OPENSEARCH_NODE" OpenSearch) ;;
        esac
        [[ $state == down ]] && down=3
        printf '%-15s 127.0.0.1:%-5s %s\n' "$svc" "$port" "$state"
    done
    return "$down"
}

main() {
    local cmd=${1:-start}
    if [[ $cmd == status ]]; then status; return; fi
    [[ $EUID -eq 0 ]] || die "run as root"
    exec 9>/run/datapipe-services.lock  # serialise callers; servers are started with fd 9 closed
    flock -w 300 9 || die "another services.sh is still running"
    case $cmd in
        start)
            local t0=$SECONDS
            ensure_packages
            start_postgres; start_replica; start_mariadb; start_mariadb_replica; start_redis
            start_search; start_opensearch
            log "all services up ($((SECONDS - t0))s)" ;;
        stop) stop_opensearch; stop_search; stop_replica; stop_postgres; stop_mariadb_replica
              stop_mariadb; stop_redis ;;
        start-postgres|start-replica|start-mariadb|start-redis) ensure_packages; "start_${cmd#start-}" ;;
        start-mariadb-replica) ensure_packages; start_mariadb_replica ;;
        stop-mariadb-replica) stop_mariadb_replica ;;
        start-search|start-opensearch) "start_${cmd#start-}" ;;
        stop-postgres|stop-replica|stop-mariadb|stop-redis|stop-search|stop-opensearch) "stop_${cmd#stop-}" ;;
        *) die "usage: $0 [start|stop|status|start-SVC|stop-SVC] (SVC: postgres replica mariadb mariadb-replica redis search opensearch)" ;;
    esac
}

main "$@"
