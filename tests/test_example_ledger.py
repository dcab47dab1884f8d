"""The example project end to end: payouts from the application database and the archive,
enriched from both (PrefetchEnricher) and from the real ledger HTTP service on loopback
(BatchEnricher), through the example's own viewset."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from datapipe_django.conf import datapipe_settings
from example_project.ledger import server as ledger_server
from example_project.ledger.book import transaction_for
from example_project.ledger.server import MAX_IDS, LedgerServer
from example_project.payouts.management.commands.seed_demo import build, data_cutoff
from example_project.payouts.models import Payout
from example_project.payouts.pipelines import payouts as payouts_pipeline
from example_project.payouts.views import PayoutViewSet
from tests.conftest import require_alias

ALIASES = ["default", "archive"]
pytestmark = pytest.mark.django_db(databases=ALIASES)

list_view = PayoutViewSet.as_view({"get": "list"})
detail_view = PayoutViewSet.as_view({"get": "retrieve"})
factory = APIRequestFactory()


@pytest.fixture(autouse=True)
def _no_replica(monkeypatch):
    """The example reads `replica` as its application database's standby; here that alias is
    the standby of the PostgreSQL `primary`, which holds no payouts: leave it out."""
    monkeypatch.setattr(payouts_pipeline, "fetchers",
                        [f for f in payouts_pipeline.fetchers if f.name != "replica"])


@pytest.fixture
def demo():
    """The demo data (seed_demo's builder): the archive holds every payout, the application
    database the last 30 days; reference rows on both."""
    require_alias("archive")
    now = timezone.now()
    data = build(seed=7, payouts=400, days=90, now=now)
    cutoff = data_cutoff(now)
    for alias in ALIASES:
        rows = data.payouts if alias == "archive" else [
            p for p in data.payouts if p.created_at >= cutoff]
        for group in (data.merchants, data.users, data.contacts, data.fund_accounts, rows):
            type(group[0]).objects.using(alias).bulk_create(group)
    return data


@pytest.fixture
def ledger(demo):
    """The ledger service on a free loopback port, with a transaction for every payout."""
    server = LedgerServer([transaction_for(p) for p in demo.payouts]).start()
    with override_settings(LEDGER_URL=server.url):
        yield server
    server.stop()


#: Payouts older than the application database keeps: served by the archive alone.
OLD = urlencode({"created_at_before": (timezone.now() - dt.timedelta(days=45)).isoformat()})


def get(query="", *, merchant=1, auth_type="public", pk=None):
    request = factory.get(f"/v1/payouts?{query}", HTTP_X_MERCHANT_ID=str(merchant),
                          HTTP_X_AUTH_TYPE=auth_type)
    response = detail_view(request, pk=pk) if pk is not None else list_view(request)
    response.render()
    return response


def body(response):
    return json.loads(response.content)


# -- the ledger, in batches --------------------------------------------------------------------

def test_transactions_come_from_the_ledger_in_one_batched_call_per_page(ledger):
    response = get("limit=100&expand[]=transaction")
    assert response.status_code == 200
    items = body(response)["items"]
    assert len(items) == 100 and "errors" not in body(response)
    assert len(ledger.calls) == 1 and sorted(ledger.calls[0]) == sorted(
        {i["transaction_id"] for i in items} - {None})
    first = next(i for i in items if i["transaction_id"] is not None)
    payout = Payout.objects.using("archive").get(pk=first["id"])
    assert first["transaction"] == {
        key: value for key, value in transaction_for(payout).items()
        if key not in {"merchant_id", "payout_id"}}


def test_without_expand_the_transaction_is_its_id_and_the_ledger_is_not_called(ledger):
    item = body(get("limit=1"))["items"][0]
    assert item["transaction"] == item["transaction_id"]
    assert ledger.calls == []


def test_the_ledger_answers_the_callers_merchant_only(ledger):
    mine = body(get("limit=3", merchant=2))["items"]
    # Somebody else's payout ids with merchant 2's transaction ids: the ledger refuses them.
    for item in mine:
        ledger.transactions[item["transaction_id"]]["merchant_id"] = 3
    items = body(get("limit=3&expand=transaction", merchant=2))["items"]
    assert [i["transaction"] for i in items] == [None, None, None]


def test_a_ledger_outage_is_a_partial_response(ledger):
    ledger.available = False
    response = get("limit=20&expand=transaction,user")
    assert response.status_code == 200
    data = body(response)
    assert data["errors"] == [{"enricher": "transaction", "code": "ledger_unavailable"}]
    assert all(i["transaction"] == i["transaction_id"] for i in data["items"])  # unexpanded
    assert all(isinstance(i["user"], dict) for i in data["items"])  # the rest is there


def test_a_slow_ledger_is_abandoned_at_the_deadline(ledger, monkeypatch):
    # The ledger's latency waits for this gate (30 s at most): it answers once the test has
    # its response, however slow the machine.
    gate = threading.Event()
    monkeypatch.setattr(ledger_server, "time", SimpleNamespace(sleep=gate.wait))
    ledger.latency = 30
    monkeypatch.setattr(payouts_pipeline, "_timeout", 1.0)
    start = time.monotonic()
    try:
        response = get("limit=20&expand=transaction")
        assert time.monotonic() - start < 3.0  # at the deadline...
        assert ledger.calls == []  # ...while the ledger has not answered yet
    finally:
        gate.set()
    assert body(response)["errors"] == [{"enricher": "transaction",
                                         "code": "deadline_exceeded"}]


def test_a_frozen_ledger_costs_one_deadline_then_is_skipped_until_it_answers(ledger,
                                                                            monkeypatch):
    """A ledger that stops answering (frozen): the request that finds it waits until its
    deadline; once that call has timed out, the enricher's breaker is open and expansions
    fail at once (``unavailable``) for ENRICH_BREAKER_SECONDS (default), without calling it;
    then one request probes it, and it is expanded again."""
    gate = threading.Event()
    monkeypatch.setattr(ledger_server, "time", SimpleNamespace(sleep=gate.wait))
    ledger.latency = 30
    monkeypatch.setattr(payouts_pipeline, "_timeout", 1.0)
    enricher = next(e for e in payouts_pipeline.enrichers if e.name == "transaction")
    try:
        first = body(get("limit=20&expand=transaction"))
        assert first["errors"] == [{"enricher": "transaction", "code": "deadline_exceeded"}]
        end = time.monotonic() + 5
        while not enricher.breaker.is_open:  # the abandoned call's own timeout ends
            assert time.monotonic() < end, "the breaker did not open"
            time.sleep(0.02)
        start = time.monotonic()
        skipped = body(get("limit=20&expand=transaction"))
        assert time.monotonic() - start < 0.5  # no waiting on the frozen ledger
        assert skipped["errors"] == [{"enricher": "transaction", "code": "unavailable"}]
        assert all(isinstance(i["transaction"], str | None) for i in skipped["items"])
    finally:
        gate.set()
    ledger.latency = 0
    time.sleep(datapipe_settings.ENRICH_BREAKER_SECONDS + 0.1)
    again = body(get("limit=20&expand=transaction"))
    assert "errors" not in again
    assert all(isinstance(i["transaction"], dict) for i in again["items"]
               if i["transaction_id"])


def test_a_ledger_that_is_not_running_is_reported_too(demo):
    server = LedgerServer([])
    url = server.url
    server.server_close()  # nothing listens there any more
    with override_settings(LEDGER_URL=url):
        data = body(get("limit=20&expand=transaction"))
    assert data["errors"] == [{"enricher": "transaction", "code": "ledger_unavailable"}]


# -- model relations, from where each payout came from -----------------------------------------

def test_a_private_caller_expands_everything_across_both_databases(ledger):
    for query, source in (("", "appdb"), (OLD, "archive")):
        response = get(f"{query}&limit=20&expand=user,fund_account.contact,transaction",
                       auth_type="private")
        assert response["X-Datapipe-Source"] == source
        data = body(response)
        assert "errors" not in data
        for item in data["items"]:
            payout = Payout.objects.using("archive").select_related(
                "user", "fund_account__contact").get(pk=item["id"])
            assert item["user"]["name"] == payout.user.name
            assert item["fund_account"]["contact"]["name"] == payout.fund_account.contact.name
            assert (item["transaction"] or {}).get("id") == payout.transaction_id


@pytest.mark.parametrize("source", ["appdb", "archive"])
def test_queries_per_page_do_not_grow_with_the_page(ledger, source):
    query = "expand=user,fund_account.contact,transaction"
    if source == "archive":
        query += f"&{OLD}"
    counts = []
    for limit in (5, 50):
        with CaptureQueriesContext(connections["default"]) as appdb, \
                CaptureQueriesContext(connections["archive"]) as archive:
            response = get(f"{query}&limit={limit}", auth_type="private")
        assert len(body(response)["items"]) == limit
        counts.append((len(appdb), len(archive)))
    # The page, then user and fund_account (keys without a database constraint: not joined
    # into the page, whose inner join would drop a payout whose row is missing), the contacts
    # selected with the fund accounts: on the database the page came from.
    assert counts[0] == counts[1] == ((3, 0) if source == "appdb" else (0, 3))


def test_a_public_caller_never_sees_fund_accounts(ledger):
    item = body(get("limit=1&expand=user"))["items"][0]
    assert "fund_account" not in item and "utr" not in item
    assert isinstance(item["user"], dict)
    for name in ("fund_account", "fund_account.contact"):
        assert body(get(f"expand={name}")) == {"expand": [f"Unknown expansion '{name}'."]}
    assert "fund_account" in body(get("limit=1", auth_type="private"))["items"][0]


def test_retrieve_expands_from_the_ledger_too(ledger, demo):
    payout = next(p for p in reversed(demo.payouts) if p.merchant_id == 1 and p.transaction_id)
    response = get("expand=transaction", pk=payout.pk)
    assert body(response)["transaction"]["id"] == payout.transaction_id


# -- the ledger service itself -----------------------------------------------------------------

def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_ledger_service_contract():
    server = LedgerServer([{"id": "t1", "merchant_id": 1, "amount": 5},
                           {"id": "t2", "merchant_id": 2, "amount": 7}]).start()
    try:
        assert fetch(f"{server.url}/health") == (200, {"status": "ok"})
        assert fetch(f"{server.url}/v1/transactions?merchant_id=1&id=t1&id=t2&id=t9") == (
            200, {"transactions": [{"id": "t1", "merchant_id": 1, "amount": 5}]})
        assert fetch(f"{server.url}/v1/transactions?id=t1")[0] == 400
        many = "&".join(f"id=x{i}" for i in range(MAX_IDS + 1))
        assert fetch(f"{server.url}/v1/transactions?merchant_id=1&{many}")[0] == 400
        server.available = False
        assert fetch(f"{server.url}/v1/transactions?merchant_id=1&id=t1")[0] == 503
    finally:
        server.stop()
