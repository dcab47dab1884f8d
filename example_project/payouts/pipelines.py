"""The ``payouts`` pipeline: recent payouts from the application database, the rest from the
archive, enriched on request with the user, fund account and contact (from the database each
payout came from) and the ledger transaction (from the ledger service, in batches).

Where the rows are (``manage.py seed_demo`` fills the databases so):

* ``appdb`` (alias ``default``) keeps the payouts of the last :data:`RETENTION` only;
* ``replica`` (alias ``replica``, with ``DATAPIPE_EXAMPLE_DB=real`` only) is its hot standby;
* ``archive`` (alias ``archive``) keeps every payout, with the same ids.

Each fetcher says what its store holds, and the chain plans every request from that
(docs/fetching.md, "Tiered sources"): ``appdb`` declares ``holds=hot_tier`` (the last 30
days, a window that slides: evaluated once per request); the replica, a mirror of ``appdb``,
holds the same and is read only in its place (``appdb`` down); the archive declares nothing,
so it holds every payout. Newest first, ``appdb`` serves the first pages and the archive
only what lies beyond 30 days (its query says ``NOT created_at >= <cut-off>``); ordered by
amount, or filtered to older payouts, the archive serves alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone

from datapipe_django import FallbackMode, Pipeline
from datapipe_django.enrichers import BatchEnricher, PrefetchEnricher
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.middleware import LoggingMiddleware, TimingMiddleware
from datapipe_django.specs import Range
from example_project.ledger.client import LedgerClient
from example_project.payouts.filters import PayoutFilterSet
from example_project.payouts.models import Payout

#: How far back the application database keeps payouts.
RETENTION = dt.timedelta(days=30)


def hot_tier() -> Range:
    """The payouts the application database holds: every one of the last :data:`RETENTION`
    (older ones are moved to the archive)."""
    return Range("created_at", gte=timezone.now() - RETENTION)


#: The ledger service (``manage.py run_ledger``), at ``settings.LEDGER_URL``.
ledger = LedgerClient()

_fetchers: list[Any] = [
    # The primary's pages are cached for 30 s (keyed by merchant, auth type and the request);
    # saving or deleting a payout invalidates its merchant's pages when the write commits.
    # Still called "appdb" in X-Datapipe-Source: the rows are the application database's.
    CachedFetcher(ORMFetcher(using="default", name="appdb", holds=hot_tier), ttl=30),
]
if "replica" in settings.DATABASES:  # DATAPIPE_EXAMPLE_DB=real
    # The standby of appdb's database: it holds what appdb holds and is read only when appdb
    # cannot answer (a fetcher on a DATAPIPE["REPLICAS"] alias mirrors the PRIMARY's anyway).
    _fetchers.append(ORMFetcher(using="replica", mirror_of="appdb"))
# No holds: every payout.
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
    # ?facets=status,mode: how many payouts matching the request (not the page) have each
    # value, counted by the engine or, without it, by the archive, which holds every payout
    # (appdb holds the last 30 days only, so it never counts them).
    facet_fields=("status", "mode"),
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
