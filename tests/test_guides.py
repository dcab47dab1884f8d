"""docs/migrating-from-drf.md runs: its marked Python blocks are executed in order, and the
hand-written DRF view and the pipeline it becomes answer the same query strings with the same
items, on rows the test generates.

A block runs when the line before its opening fence is ``<!-- guide: run -->`` (see
CONTRIBUTING.md); ``payouts.models`` and ``payouts.filters`` are the example project's.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIRequestFactory, force_authenticate

from datapipe_django import registry
from example_project.payouts import filters as example_filters
from example_project.payouts import models as example_models
from example_project.payouts.models import Contact, FundAccount, Merchant, MerchantUser, Payout

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-drf.md"
BLOCK = re.compile(r"^<!-- guide: run -->\n```python\n(.*?)^```$", re.M | re.S)


def guide_blocks() -> list[str]:
    return BLOCK.findall(GUIDE.read_text())


@pytest.fixture(scope="module")
def guide(django_db_blocker) -> types.ModuleType:
    """The guide's code, as one module (its pipelines kept out of the suite's registry)."""
    blocks = guide_blocks()
    assert len(blocks) >= 4, "the guide's marked blocks are missing"
    package = types.ModuleType("payouts")
    package.__path__ = []  # a package: `from payouts.models import ...`
    aliases = {"payouts": package, "payouts.models": example_models,
               "payouts.filters": example_filters}
    saved_modules = {name: sys.modules.get(name) for name in aliases}
    saved_registry = dict(registry._pipelines)
    sys.modules.update(aliases)
    module = types.ModuleType("guide_drf")
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{GUIDE.name} block {i + 1}", "exec"), module.__dict__)
    finally:
        registry._pipelines.clear()
        registry._pipelines.update(saved_registry)
        for name, old in saved_modules.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module


@pytest.fixture
def rows(db) -> dict[str, Any]:
    """Two merchants' payouts with distinct amounts and times (so every ordering is total)."""
    rng = random.Random(17)
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    merchants = [Merchant.objects.create(name=f"m{i}") for i in range(2)]
    people: dict[int, list[MerchantUser]] = {}
    accounts: dict[int, list[FundAccount]] = {}
    for m in merchants:
        people[m.id] = [MerchantUser.objects.create(merchant=m, name=f"u{m.id}-{i}",
                                                    email=f"u{i}@m{m.id}.example")
                        for i in range(3)]
        contact = Contact.objects.create(merchant=m, name=f"c{m.id}", type="vendor")
        accounts[m.id] = [FundAccount.objects.create(merchant=m, contact=contact,
                                                     account_type="vpa", details=f"v{i}@upi")
                          for i in range(2)]
    amounts = rng.sample(range(100, 100_000), 60)
    words = ["salary", "vendor bill", "refund", "invoice 42", "rent"]
    for i, amount in enumerate(amounts):
        m = merchants[i % 2]
        Payout.objects.create(
            merchant=m, user=rng.choice(people[m.id]), fund_account=rng.choice(accounts[m.id]),
            amount=amount, status=rng.choice(["processed", "queued", "reversed"]),
            mode=rng.choice(["UPI", "NEFT"]), purpose="p", narration=rng.choice(words),
            reference_id=f"REF-{i}", created_at=base + dt.timedelta(minutes=rng.randrange(10**5),
                                                                     seconds=i))
    return {"merchants": merchants}


class Caller:
    """What request.user is in the guide's views: a merchant's API user."""

    is_authenticated = True

    def __init__(self, merchant_id: int) -> None:
        self.merchant_id = merchant_id


def get(view: Any, query: dict[str, Any], merchant_id: int) -> Any:
    request = APIRequestFactory().get("/v1/payouts", query)
    force_authenticate(request, user=Caller(merchant_id))
    response = view(request)
    response.render()
    return response


def both(guide: types.ModuleType, query: dict[str, Any], merchant_id: int,
         viewset: str = "PayoutViewSet") -> tuple[Any, Any]:
    drf = get(guide.PayoutListView.as_view(), query, merchant_id)
    ours = get(getattr(guide, viewset).as_view({"get": "list"}), query, merchant_id)
    return drf, ours


QUERIES = [
    {},
    {"status": "processed", "ordering": "-amount", "limit": 2},
    {"search": "vendor", "limit": 5, "offset": 3},
    {"ordering": "amount", "mode": "UPI", "limit": 10},
    {"created_at_after": "2026-03-20T00:00:00Z", "ordering": "-created_at"},
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_pipeline_answers_with_the_hand_written_views_items(guide, rows, query):
    for merchant in rows["merchants"]:
        drf, ours = both(guide, query, merchant.id)
        assert drf.status_code == ours.status_code == 200
        assert ours.data["items"] == drf.data["results"]
        assert ours.data["has_more"] == (drf.data["next"] is not None)
        assert ours.data["count"] == len(drf.data["results"])


@given(status=st.sampled_from([None, "processed", "queued", "reversed"]),
       ordering=st.sampled_from([None, "amount", "-amount", "created_at", "-created_at"]),
       search=st.sampled_from([None, "vendor", "bill", "REF-1", "invoice 42", "nothing"]),
       limit=st.integers(1, 12), offset=st.integers(0, 40))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_same_items_for_any_filter_order_search_and_page(guide, rows, status, ordering, search,
                                                         limit, offset):
    query = {k: v for k, v in {"status": status, "ordering": ordering, "search": search,
                               "limit": limit, "offset": offset}.items() if v is not None}
    drf, ours = both(guide, query, rows["merchants"][1].id)
    assert ours.data["items"] == drf.data["results"]


def test_the_drf_envelope_and_expansion_on_request(guide, rows):
    merchant = rows["merchants"][0].id
    query = {"status": "processed", "limit": 3}
    drf, ours = both(guide, query, merchant, viewset="DRFEnvelopePayoutViewSet")
    assert set(ours.data) == {"next_cursor", "results"}
    assert ours.data["results"] == drf.data["results"]
    # Expandable: the relation is an id unless asked for, then the same nested object.
    _, plain = both(guide, query, merchant, viewset="ExpandablePayoutViewSet")
    assert [item["user"] for item in plain.data["items"]] == \
        [item["user"]["id"] for item in drf.data["results"]]
    _, expanded = both(guide, {**query, "expand[]": ["user", "fund_account"]}, merchant,
                       viewset="ExpandablePayoutViewSet")
    assert expanded.data["items"] == drf.data["results"]
