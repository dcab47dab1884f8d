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
# The debug-toolbar panel's browser test (tests/test_debug_toolbar.py) drives headless Chromium.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    [[ $EUID -eq 0 ]] || { echo "scripts/test.sh: need chromium and chromium-driver" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
             --no-install-recommends chromium chromium-driver >/dev/null; }
fi
"$PYTHON" -m ruff check .
# The typed public API: mypy with django-stubs over the library ([tool.mypy] in pyproject.toml).
"$PYTHON" -m mypy

# The documentation site: a page missing from mkdocs.yml's nav, a broken link or anchor fails.
"$PYTHON" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

# The sdist and the wheel users install; tests/test_packaging.py installs this wheel into a
# fresh virtualenv outside the checkout and runs a project on it.
rm -rf dist
"$PYTHON" -m build --outdir dist . >/dev/null
"$PYTHON" -m twine check --strict dist/*
DATAPIPE_WHEEL=$(ls "$PWD"/dist/datapipe_django-*.whl)
export DATAPIPE_WHEEL

status=0
# The whole run (no pytest arguments) first fuzzes the example's API from its OpenAPI schema:
# a fixed seed, bounded examples, ~1.5 minutes. SCHEMATHESIS=0 skips it, =1 forces it.
# It runs before pytest so that pytest's summary is the run's closing line.
if [[ ${SCHEMATHESIS:-$(( $# == 0 ))} == 1 ]]; then
    bash scripts/schemathesis.sh || status=$((status ? status : 1))
fi

# The whole suite measures the library's coverage and fails under the gate of pyproject.toml
# ([tool.coverage.report] fail_under); a run of chosen tests (arguments given) does not.
coverage=()
if (($# == 0)); then
    coverage=(--cov --cov-report=term)
fi
"$PYTHON" -m pytest "${coverage[@]}" "$@" || status=$?
if ((status == 5)); then
    echo "scripts/test.sh: pytest collected no tests; treating that as a failure" >&2
fi
exit "$status"
