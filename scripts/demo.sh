#!/usr/bin/env bash
# Run the example payouts API on SQLite: install, migrate, seed, serve (with the ledger service).
#
#   bash scripts/demo.sh                 # then: curl 'http://127.0.0.1:8000/v1/payouts?limit=2'
#   PORT=8080 LEDGER_PORT=8081 bash scripts/demo.sh   # the API's and the ledger's ports
#   DATAPIPE_EXAMPLE_DB=real bash scripts/demo.sh   # on the servers of scripts/services.sh
#
# Needs Python 3.11+ and PyPI. It creates a virtualenv of its own, .venv/ in the checkout
# (git-ignored; delete it to start over), from `python3` (else `python`; BASE_PYTHON=... to
# choose), and installs into it; PYTHON=/path/to/python uses that interpreter as it is
# instead, and installs into whatever environment it belongs to. The SQLite files live in
# example_project/var/ (delete it to start over).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT=${PORT:-8000}
LEDGER_PORT=${LEDGER_PORT:-8001}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

log() { echo "[demo] $*" >&2; }
die() { echo "[demo] ERROR: $*" >&2; exit 1; }

check_version() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$1 is $("$1" -V 2>&1); datapipe-django needs Python 3.11+"
}

if [[ -z ${PYTHON:-} ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        BASE_PYTHON=${BASE_PYTHON:-$(command -v python3 || command -v python || true)}
        [[ -n $BASE_PYTHON ]] \
            || die "no python found; install Python 3.11+ or set BASE_PYTHON=/path/to/python"
        check_version "$BASE_PYTHON"
        log "creating the virtualenv .venv/ (from $BASE_PYTHON)"
        "$BASE_PYTHON" -m venv .venv || die "could not create .venv/ with $BASE_PYTHON -m venv \
(on Debian: apt-get install python3-venv), or set PYTHON=/path/to/python"
    fi
    PYTHON=$PWD/.venv/bin/python
fi
check_version "$PYTHON"

log "installing datapipe-django (editable) and its dependencies"
# OpenTelemetry (/metrics) and drf-spectacular (/schema/), and the real servers' client
# libraries (PostgreSQL, MariaDB, Redis, Elasticsearch: q goes to the engine) when asked for.
extras="example"
[[ ${DATAPIPE_EXAMPLE_DB:-} == real ]] && extras="example,postgres,mysql,redis,elasticsearch"
"$PYTHON" -m pip install -q -e ".[$extras]"

# Every writable alias: `default` (the application database) and `archive`. With
# DATAPIPE_EXAMPLE_DB=real the `replica` alias is a hot standby and follows the primary.
for alias in default archive; do
    log "migrating the '$alias' database"
    "$PYTHON" manage.py migrate --database="$alias" --verbosity=0
done

log "seeding demo data"
"$PYTHON" manage.py seed_demo

# The ledger service `?expand[]=transaction` reads, in the background for as long as the API runs.
export LEDGER_URL="http://127.0.0.1:$LEDGER_PORT"
log "starting the ledger service on $LEDGER_URL"
"$PYTHON" manage.py run_ledger --port "$LEDGER_PORT" &
LEDGER_PID=$!
trap 'kill "$LEDGER_PID" 2>/dev/null || true' EXIT

log "serving on http://127.0.0.1:$PORT/v1/payouts (Ctrl-C stops)"
"$PYTHON" manage.py runserver "127.0.0.1:$PORT"
