"""``?total=true``: how many rows match a request, exactly, or a reason why not.

A total is only ever exact. It follows the chain's plan for the request (``FetcherChain.plan``,
from the sources' ``holds`` as the page's execution evaluated them; see docs/fetching.md,
"Tiered sources"), made for the whole request (no cursor, no offset):

* when the sources that would be read are disjoint (one source that holds every matching row;
  or tiers, each later one asked only beyond what the earlier ones hold), the total is the sum
  of their counts, each over its own region: ``count(request)`` is ``SELECT COUNT(*)`` on a
  database alias, the engine's exact hit count (``track_total_hits``) on a search index. A
  source that cannot count is replaced by a mirror that holds the same (its replica or its
  primary); a single search source's page reports its total on the way, at no extra cost;
* else (sources merged because they may hold the same rows) a source that holds every
  matching row by declaration counts it alone: a ``SearchFetcher`` with ``complete=True``
  (the default: the index holds the whole model).

Otherwise (no such source, or the one that would count is unavailable or times out) there is
no total: :class:`Total` says ``exact=False`` and why (``reason``), and the list body carries
``"total_exact": false`` instead; the page is served as usual. A count covers every row that
matches the request's filters, search and tenant, whatever page, offset or cursor it asks for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from datapipe_django.chain import (
    UNAVAILABLE_ERRORS,
    Attempt,
    ChainResult,
    FetcherChain,
    Plan,
)
from datapipe_django.errors import failure_reason
from datapipe_django.fetchers.base import BaseFetcher, FetchRequest
from datapipe_django.tiers import narrow

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


def _holds_everything(fetcher: BaseFetcher) -> bool:
    return fetcher.complete


def count_total(chain: FetcherChain, request: FetchRequest, page: ChainResult) -> Total:
    """Count the rows of ``request`` (see the module's docstring). ``page`` is the execution's
    answer: its ``holds`` (evaluated once per execution) plan the count, and a search source's
    page that reported an exact total is not asked again."""
    whole = replace(request, after=None, offset=0, pk=None, select_related=(), only=None)
    start = time.perf_counter()
    plan = chain.plan(whole, holds=page.holds)
    if not plan.reading:
        return Total(None, False, reason="no source can serve the request")
    by_name = {f.name: f for f in chain.fetchers}
    counting = _disjoint_total if plan.disjoint else _holder_total
    return counting(plan, whole, by_name, page.attempts, start)


def _disjoint_total(plan: Plan, whole: FetchRequest, by_name: dict[str, Any],
                    attempts: Sequence[Attempt], start: float) -> Total:
    """The sum of the reading steps' counts, each over its region (the steps are disjoint)."""
    reading = plan.reading
    if len(reading) == 1:
        reported = _reported_total(reading[0].source, attempts)
        if reported is not None:
            return Total(reported, True, reading[0].source)
    value = 0
    counted: list[str] = []
    failures: list[str] = []
    for step in reading:
        region = whole if step.region is None else replace(
            whole, spec=narrow(whole.spec, [step.region]))
        stand_ins = [step.source] + [s.source for s in plan.steps if s.mirror_of == step.source]
        found = _count_one([by_name[n] for n in stand_ins if n in by_name], region, failures)
        if found is None:
            return Total(None, False, reason="; ".join(failures))
        value += found[1]
        counted.append(found[0])
    return Total(value, True, "+".join(counted), duration=time.perf_counter() - start)


def _holder_total(plan: Plan, whole: FetchRequest, by_name: dict[str, Any],
                  attempts: Sequence[Attempt], start: float) -> Total:
    """The count of one reading source that holds every matching row by declaration (the
    reading sources may hold the same rows)."""
    reading = plan.reading
    holders = [by_name[s.source] for s in reading
               if s.source in by_name and _holds_everything(by_name[s.source])]
    if not holders:
        return Total(None, False, reason=(
            "the matching rows are spread over sources that may hold the same rows ("
            + ", ".join(s.source for s in reading) + "): no single one holds them all"))
    for fetcher in holders:
        reported = _reported_total(fetcher.name, attempts)
        if reported is not None:
            return Total(reported, True, fetcher.name)
    refusals: list[str] = []
    found = _count_one(holders, whole, refusals)
    if found is None:
        return Total(None, False, reason="; ".join(refusals))
    return Total(found[1], True, found[0], duration=time.perf_counter() - start)


def _count_one(fetchers: Sequence[Any], request: FetchRequest,
               failures: list[str]) -> tuple[str, int] | None:
    """The first exact count among ``fetchers`` (stand-ins for one region), or None with
    ``failures`` saying why."""
    for fetcher in fetchers:
        try:
            value = fetcher.count(request)
        except UNAVAILABLE_ERRORS as exc:
            failures.append(f"{fetcher.name} unavailable ({failure_reason(exc)})")
            continue
        if value is None:
            failures.append(f"{fetcher.name} cannot count exactly")
            continue
        return fetcher.name, int(value)
    return None


def _reported_total(source: str, attempts: Sequence[Attempt]) -> int | None:
    """The exact total a source reported with its page (a search's ``hits.total``)."""
    for attempt in attempts:
        if attempt.source == source and attempt.outcome == "ok" and \
                attempt.meta.get("total_hits_relation") == "eq":
            value = attempt.meta.get("total_hits")
            return int(value) if value is not None else None
    return None
