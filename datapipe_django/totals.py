"""``?total=true``: how many rows match a request, exactly, or a reason why not.

A total is only ever exact. It is counted on one source that holds every matching row:

* the only source that can serve the request (every other one declined it), with its
  ``count(request)``: ``SELECT COUNT(*)`` on a database alias, the engine's exact hit count
  (``track_total_hits``) on a search index;
* else a source that holds every matching row by declaration (a ``SearchFetcher`` with
  ``complete=True``, the default: the index holds the whole model).

Rows spread over several sources that may overlap (a recent database and an archive that holds
them too) cannot be summed, so then there is no total: :class:`Total` says ``exact=False``
and why (``reason``), and the list body carries ``"total_exact": false`` instead of a total.
The same happens when the source that would count is unavailable or times out: the page is
still served. A count covers every row that matches the request's filters, search and tenant,
whatever page, offset or cursor it asks for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from datapipe_django.chain import UNAVAILABLE_ERRORS, Attempt, _reason
from datapipe_django.fetchers.base import FetchRequest

__all__ = ["Total", "count_total"]


@dataclass(frozen=True)
class Total:
    """The outcome of counting: ``value`` (None unless ``exact``), the ``source`` that counted
    and, when not exact, the ``reason``; ``duration`` in seconds."""

    value: int | None
    exact: bool
    source: str = ""
    reason: str = ""
    duration: float = 0.0


def _holds_everything(fetcher: Any) -> bool:
    return bool(getattr(fetcher, "complete", False))


def count_total(fetchers: Sequence[Any], request: FetchRequest,
                attempts: Sequence[Attempt]) -> Total:
    """Count the rows of ``request`` on a source that holds them all (see the module's
    docstring). ``attempts`` are the page's: sources that declined it are not candidates,
    and a search source's page that reported an exact total is not asked again."""
    declined = {a.source for a in attempts if a.outcome == "declined"}
    candidates = [f for f in fetchers if f.name not in declined]
    if len(candidates) == 1:
        counters = candidates
    else:
        counters = [f for f in candidates if _holds_everything(f)]
    if not counters:
        return Total(None, False, reason=(
            "the matching rows are spread over sources that may hold the same rows ("
            + ", ".join(f.name for f in candidates) + "): no single one holds them all"))
    whole = replace(request, after=None, offset=0, pk=None, select_related=(), only=None)
    failures = []
    for fetcher in counters:
        reported = _reported_total(fetcher.name, attempts)
        if reported is not None:
            return Total(reported, True, fetcher.name)
        count = getattr(fetcher, "count", None)
        if not callable(count):
            failures.append(f"{fetcher.name} cannot count")
            continue
        start = time.perf_counter()
        try:
            value = count(whole)
        except UNAVAILABLE_ERRORS as exc:
            failures.append(f"{fetcher.name} unavailable ({_reason(exc)})")
            continue
        if value is None:
            failures.append(f"{fetcher.name} cannot count exactly")
            continue
        return Total(int(value), True, fetcher.name, duration=time.perf_counter() - start)
    return Total(None, False, reason="; ".join(failures))


def _reported_total(source: str, attempts: Sequence[Attempt]) -> int | None:
    """The exact total a source reported with its page (a search's ``hits.total``)."""
    for attempt in attempts:
        if attempt.source == source and attempt.outcome == "ok" and \
                attempt.meta.get("total_hits_relation") == "eq":
            value = attempt.meta.get("total_hits")
            return int(value) if value is not None else None
    return None
