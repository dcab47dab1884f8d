"""The ``payouts`` pipeline: recent payouts from the application database, the rest from the
archive, enriched with the user, fund account and contact on request.

Where the rows are (``manage.py seed_demo`` fills the databases so):

* ``appdb`` (alias ``default``) keeps the payouts of the last :data:`RETENTION` only;
* ``replica`` (alias ``replica``, with ``DATAPIPE_EXAMPLE_DB=real`` only) is its hot standby;
* ``archive`` (alias ``archive``) keeps every payout, with the same ids.

The chain is SEQUENTIAL: the primary answers first and the archive is read only when the page
is not full yet (or the primary is down). Rows present in both are deduplicated by id.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db.models import prefetch_related_objects
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from datapipe_django import FallbackMode, Pipeline
from datapipe_django.enrichers import BaseEnricher, EnrichContext
from datapipe_django.fetchers import FetchRequest, ORMFetcher
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


class RelatedEnricher(BaseEnricher):
    """Loads a model relation of the page's rows (``fund_account.contact``: nested) with one
    query per relation, from the database each row came from.

    Small stand-in for the library's ``PrefetchEnricher``.
    """

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.lookup = path.replace(".", "__")

    def enrich(self, items: list[Any], context: EnrichContext) -> None:
        by_alias: dict[str | None, list[Any]] = defaultdict(list)
        for item in items:
            by_alias[item._state.db].append(item)
        for rows in by_alias.values():
            # Django reads the related rows from the rows' own database alias.
            prefetch_related_objects(rows, self.lookup)


_fetchers: list[Any] = [ORMFetcher(using="default", name="appdb", can_handle=recent_only)]
if "replica" in settings.DATABASES:  # DATAPIPE_EXAMPLE_DB=real
    _fetchers.append(ORMFetcher(using="replica", can_handle=recent_only))
_fetchers.append(ORMFetcher(using="archive", name="archive"))

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
    # Run when asked for: ?expand[]=user&expand[]=fund_account.contact
    enrichers=[
        RelatedEnricher("user"),
        RelatedEnricher("fund_account", auth_types={"private"}),
        RelatedEnricher("fund_account.contact", auth_types={"private"}),
    ],
    timeout=2.0,  # one budget for the whole request, in seconds
)
