#!/usr/bin/env bash
# Schemathesis against the example project's OpenAPI schema: every check, every phase, a fixed
# seed and a bounded number of examples, once per caller (merchant 1 as a public caller, merchant
# 2 as a private one). Fails on any 5xx or schema violation. scripts/test.sh runs it in CI.
#
#   bash scripts/schemathesis.sh                   # SQLite in a temporary directory
#   SCHEMATHESIS_MAX_EXAMPLES=100 bash scripts/schemathesis.sh
#
# The example runs on SQLite files in a fresh temporary directory, with DEBUG off (the bodies a
# production client would get), served by `manage.py runserver` on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
PORT=${SCHEMATHESIS_PORT:-18765}
SEED=${SCHEMATHESIS_SEED:-20261204}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-25}
REPORT_DIR=${SCHEMATHESIS_REPORT_DIR:-$(mktemp -d)}
mkdir -p "$REPORT_DIR"
PHASES=examples,coverage,fuzzing,stateful

log() { echo "[schemathesis] $*" >&2; }

var=$(mktemp -d)
server=""
cleanup() {
    if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$var"
}
trap cleanup EXIT

export DATAPIPE_EXAMPLE_VAR=$var DJANGO_DEBUG=0 DATAPIPE_EXAMPLE_DB=sqlite \
    DATAPIPE_EXAMPLE_SEARCH=0 LEDGER_URL=http://127.0.0.1:9 PYTHONUNBUFFERED=1
for alias in default archive; do
    "$PYTHON" manage.py migrate --database="$alias" --verbosity=0
done
"$PYTHON" manage.py seed_demo --payouts 300 >/dev/null

"$PYTHON" manage.py runserver --noreload "127.0.0.1:$PORT" >"$REPORT_DIR/server.log" 2>&1 &
server=$!
schema="http://127.0.0.1:$PORT/schema/"

status=0
for caller in "1 public" "2 private"; do
    read -r merchant auth <<<"$caller"
    log "merchant $merchant ($auth): $schema, seed $SEED, at most $MAX_EXAMPLES examples"
    SCHEMATHESIS_MERCHANT=$merchant SCHEMATHESIS_AUTH_TYPE=$auth \
    SCHEMATHESIS_HOOKS=scripts.schemathesis_hooks PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} \
    "$PYTHON" -m schemathesis.cli --config-file scripts/schemathesis.toml run "$schema" \
        --checks all --phases "$PHASES" --seed "$SEED" --max-examples "$MAX_EXAMPLES" \
        --header "X-Merchant-Id: $merchant" --header "X-Auth-Type: $auth" \
        --workers 1 --request-timeout 10 --wait-for-schema 60 --suppress-health-check all \
        --report junit --report-junit-path "$REPORT_DIR/merchant-$merchant.xml" \
        || status=$?
done
if ((status != 0)); then
    log "failed; the server's log: $REPORT_DIR/server.log"
fi
exit "$status"
