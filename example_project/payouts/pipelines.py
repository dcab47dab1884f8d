"""The ``payouts`` pipeline: recent payouts from the application database, the rest from the
archive, enriched on request with the user, fund account and contact (from the database each
payout came from) and the ledger transaction (from the ledger service, in batches).

Where the rows are (``manage.py seed_demo`` fills the databases so):

* ``appdb`` (alias ``default``) keeps the payouts of the last :data:`RETENTION` only;
* ``replica`` (alias ``replica``, with ``DATAPIPE_EXAMPLE_DB=real`` only) is its hot standby;
* ``archive`` (alias ``archive``) keeps every payout, with the same ids.

The chain is SEQUENTIAL: the primary answers first and the archive is read only when the page
is not full yet (or the primary is down). Rows present in both are deduplicated by id.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from datapipe_django import FallbackMode, Pipeline
from datapipe_django.enrichers import BatchEnricher, PrefetchEnricher
from datapipe_django.fetchers import CachedFetcher, FetchRequest, ORMFetcher
from datapipe_django.middleware import LoggingMiddleware, TimingMiddleware
from example_project.ledger.client import LedgerClient
from example_project.payouts.filters import PayoutFilterSet
from example_project.payouts.models import Payout

#: How far back the application database keeps payouts.
RETENTION = dt.timedelta(days=30)


def _last_value(filters: Any, key: str) -> str | None:
    """The raw value of query parameter ``key`` (a QueryDict, or a dict of str or lists)."""
    if hasattr(filters, "getlist"):
        values = filters.getlist(key)
    else:
        value = filters.get(key)
        values = value if isinstance(value, list | tuple) else [value]
    values = [v for v in values if v not in (None, "")]
    return str(values[-1]) if values else None


def recent_only(request: FetchRequest) -> bool:
    """Whether the application database (last :data:`RETENTION` of payouts) can serve a page.

    It holds *every* payout newer than its cut-off, so its rows are the beginning of the answer
    exactly when the page is ordered newest first; the archive completes the page when the
    primary runs out. It declines:

    * a request ordered otherwise (by amount, oldest first): its best rows may be archived;
    * a request filtered to ``created_at`` strictly older than the retention window
      (``created_at_before`` earlier than now - RETENTION), or a cursor page that starts
      there: it has none of those rows.

    The archive holds every payout, so declining is never wrong, only slower.
    """
    first = request.ordering.fields[0]
    if first.name != "created_at" or not first.descending:
        return False
    window_start = timezone.now() - RETENTION
    if request.after is not None and request.after[0] < window_start:
        return False  # the cursor's last row is already older than the window
    before = _last_value(request.filters, "created_at_before")
    if before is None:
        return True
    # Already validated by the FilterSet (the validate stage runs first); parse it the same way.
    moment = parse_datetime(before)
    if moment is None:
        return True
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment >= window_start


#: The ledger service (``manage.py run_ledger``), at ``settings.LEDGER_URL``.
ledger = LedgerClient()

_fetchers: list[Any] = [
    # The primary's pages are cached for 30 s (keyed by merchant, auth type and the request);
    # saving or deleting a payout invalidates its merchant's pages when the write commits.
    # Still called "appdb" in X-Datapipe-Source: the rows are the application database's.
    CachedFetcher(ORMFetcher(using="default", name="appdb", can_handle=recent_only), ttl=30),
]
if "replica" in settings.DATABASES:  # DATAPIPE_EXAMPLE_DB=real
    _fetchers.append(ORMFetcher(using="replica", can_handle=recent_only))
_fetchers.append(ORMFetcher(using="archive", name="archive"))
if getattr(settings, "PAYOUTS_SEARCH", False):  # a search engine is configured
    from datapipe_django.fetchers import SearchFetcher
    from example_project.payouts.documents import PayoutDocument

    # ?q= goes to the engine, which indexes every payout; the hits are read back from the
    # archive (it holds them all) in one query. Its answer is complete: the databases below
    # serve q only while the engine is down.
    _fetchers.insert(0, SearchFetcher(PayoutDocument, name="search", using="archive"))

payouts = Pipeline(
    "payouts",
    model=Payout,
    # The query parameters a client may filter by; every source applies them.
    filterset_class=PayoutFilterSet,
    # ?q=invoice: each word must appear in one of these fields.
    search_fields=("narration", "reference_id", "purpose"),
    # Every source, every query: WHERE merchant_id = <the caller's merchant>.
    tenant_field="merchant_id",
    # A total order (id breaks ties): offset and cursor pages are exact across sources.
    ordering=("-created_at", "-id"),
    ordering_fields=("created_at", "amount", "id"),
    fetchers=_fetchers,
    fallback=FallbackMode.SEQUENTIAL,
    # Run when asked for: ?expand[]=user&expand[]=fund_account.contact&expand[]=transaction.
    # Model relations: one query per relation per page, from the database each payout came
    # from (an archived payout's fund account from the archive). The ledger: one call per 100
    # transactions. All at once (parallel_enrichment), within the request's 2 s; a failed
    # optional one leaves its field unexpanded and is listed in the response's "errors".
    enrichers=[
        PrefetchEnricher("user"),
        PrefetchEnricher("fund_account", auth_types={"private"}),
        PrefetchEnricher("fund_account.contact", auth_types={"private"}),
        BatchEnricher("transaction", key="transaction_id", load=ledger.get_many,
                      batch_size=100),
    ],
    parallel_enrichment=True,
    max_workers=5,
    timeout=2.0,  # one budget for the whole request, in seconds
    # One log line per request (the sources tried and why, items, duration) and a warning for
    # a stage slower than half a second. Spans and metrics need no declaration: they go to
    # OpenTelemetry (configured in example_project/telemetry.py).
    middleware=[LoggingMiddleware(), TimingMiddleware(slow=0.5)],
)
