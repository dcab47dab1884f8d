#!/usr/bin/env bash
# The project's single test command (also what CI runs): real servers, lint, then pytest.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# Servers first: on a fresh machine this also apt-installs the headers mysqlclient builds against.
bash scripts/services.sh start
"$PYTHON" -m pip install -q -e ".[dev]"
"$PYTHON" -m ruff check .

status=0
"$PYTHON" -m pytest "$@" || status=$?
if ((status == 5)); then
    echo "scripts/test.sh: pytest collected no tests; treating that as a failure" >&2
fi
exit "$status"
