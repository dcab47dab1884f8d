"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Each run is one caller: the example's caller headers (X-Merchant-Id, X-Auth-Type) are fixed by
the configuration, so a "negative" case that means to send a bad merchant actually sends the
fixed, valid one, and its 200 is no accepted negative data. Exactly those failures are dropped;
every other failure (any 5xx, any schema violation) still fails the run. A bad merchant header
is refused with a 400, which tests/test_hostile_input.py checks.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import schemathesis
from schemathesis.core.failures import AcceptedNegativeData

CALLER_HEADERS = frozenset({"x-merchant-id", "x-auth-type"})


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if not isinstance(failure, AcceptedNegativeData):
        return True
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    location = getattr(getattr(data, "parameter_location", None), "name", "")
    parameter = str(getattr(data, "parameter", "") or "").lower()
    mutations = [str(getattr(m, "parameter", "") or "").lower()
                 for m in getattr(data, "mutations", None) or ()]
    touched = {parameter} | set(mutations) if (parameter or mutations) else set()
    drop = location == "HEADER" and bool(touched) and touched <= CALLER_HEADERS
    if drop and os.environ.get("SCHEMATHESIS_HOOKS_VERBOSE"):
        print(f"dropped: {sorted(touched)}: {getattr(data, 'description', '')}", file=sys.stderr)
    return not drop
