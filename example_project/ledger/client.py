"""`LedgerClient`: the ledger's transactions in batches, for ``BatchEnricher``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from django.conf import settings

__all__ = ["DEFAULT_URL", "LedgerClient", "LedgerUnavailable"]

#: Where ``manage.py run_ledger`` listens by default (``settings.LEDGER_URL`` overrides).
DEFAULT_URL = "http://127.0.0.1:8001"


class LedgerUnavailable(Exception):
    """The ledger did not answer (refused, 5xx, not JSON). Reported as the enricher's code."""

    code = "ledger_unavailable"


class LedgerClient:
    """Calls ``GET /v1/transactions`` on the ledger at ``base_url`` (default:
    ``settings.LEDGER_URL``, read at call time, so ``override_settings`` works).

    :meth:`get_many` is a ``BatchEnricher`` loader: ``requires_context`` makes the enricher
    pass the request's context, whose tenant scopes the call (``merchant_id``) and whose
    remaining time bounds it (``timeout`` at most).
    """

    def __init__(self, base_url: str | None = None, *, timeout: float = 2.0) -> None:
        self._base_url = base_url
        self.timeout = timeout

    @property
    def base_url(self) -> str:
        return (self._base_url or getattr(settings, "LEDGER_URL", None) or DEFAULT_URL).rstrip("/")

    def get_many(self, ids: Sequence[str], context: Any) -> dict[str, dict[str, Any]]:
        """``{id: transaction}`` for the ``ids`` the ledger has for the context's tenant."""
        if context.tenant is None:
            return {}  # no merchant, no transactions (never another tenant's)
        query = urlencode({"merchant_id": context.tenant, "id": list(ids)}, doseq=True)
        remaining = context.remaining
        timeout = self.timeout if remaining is None else max(0.001, min(self.timeout, remaining))
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/transactions?{query}",
                                        timeout=timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise LedgerUnavailable(f"ledger answered {exc.code}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise TimeoutError(f"ledger did not answer within {timeout:.3f} s") from exc
            raise LedgerUnavailable(f"ledger unreachable: {exc.reason}") from exc
        except ValueError as exc:
            raise LedgerUnavailable("ledger answered something that is not JSON") from exc
        return {t["id"]: t for t in body.get("transactions", [])}

    get_many.requires_context = True  # type: ignore[attr-defined]
