"""The example project's payouts Document serves everything its pipeline asks of a source:
the tenant, every filter of PayoutFilterSet, the orderings and q (checked on the mapping; the
example itself runs against the node with DATAPIPE_EXAMPLE_DB=real)."""

from __future__ import annotations

import pytest

pytest.importorskip("django_elasticsearch_dsl")

from datapipe_django.fetchers import SearchFetcher
from datapipe_django.paging import Ordering
from datapipe_django.search.body import search_body
from datapipe_django.specs import Eq, compile_filterset
from example_project.payouts.documents import PayoutDocument
from example_project.payouts.filters import PayoutFilterSet
from example_project.payouts.models import Payout
from example_project.payouts.pipelines import payouts


def test_the_payouts_document_passes_every_check() -> None:
    assert SearchFetcher(PayoutDocument, using="archive").check(payouts) == []


@pytest.mark.django_db
def test_every_filter_q_and_ordering_compile_for_the_engine() -> None:
    fields = SearchFetcher(PayoutDocument).field_map(Payout)
    spec = Eq("merchant_id", 1) & compile_filterset(PayoutFilterSet, {
        "status": "processed", "status__in": "processed,reversed", "mode": "UPI",
        "amount_min": "100", "amount_max": "500000", "created_at_after": "2026-01-01",
        "created_at_before": "2026-02-01T00:00:00Z", "fund_account": "3", "user": "2",
        "reference_id": "SAL-202611-005", "utr__isnull": "true"})
    for names in (("-created_at", "-id"), ("amount",), ("-id",)):
        body = search_body(spec=spec, size=11, ordering=Ordering.for_model(Payout, names),
                           fields=fields, search="acme salary",
                           search_fields=payouts.search_fields)
        assert body["query"]["bool"]["must"][0]["multi_match"]["fields"] == [
            "narration", "reference_id.text", "purpose"]
    assert body["sort"][0] == {"id": {"order": "desc", "missing": "_last"}}
    text = str(body["query"])
    for name in ("merchant_id", "status", "mode", "amount", "created_at", "fund_account",
                 "user", "reference_id", "utr"):
        assert f"'{name}'" in text
