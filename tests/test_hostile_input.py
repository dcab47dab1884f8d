"""Hostile input (issue 10): every bad request is a clear 4xx naming its parameter, runs no
query, never a 500 and never a fake outage; what a client reads of a failure is generic.

The payouts model of the example project (an integer tenant, integer foreign keys) is served by
one ORM source per engine: SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import urllib.parse
from contextlib import ExitStack
from typing import Any

import django_filters
import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rest_framework.test import APIRequestFactory

from datapipe_django import Pipeline
from datapipe_django.enrichers import PrefetchEnricher
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.rest import PipelineViewSet
from datapipe_django.test import InMemoryFetcher
from example_project.payouts.filters import PayoutFilterSet
from example_project.payouts.models import Merchant, MerchantUser, Payout
from example_project.payouts.serializers import PayoutSerializer
from tests.conftest import engine_databases

DB = pytest.mark.django_db(databases=engine_databases())

BIG = 10**20  # past every integer column
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class RecordingMetrics:
    """Every metric call, to prove what was (not) counted."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, str]] = []

    def stage(self, pipeline: str, stage: str, duration: float, error: str | None) -> None:
        pass

    def source(self, pipeline: str, source: str, outcome: str, duration: float) -> None:
        self.sources.append((source, outcome))


def payouts_pipeline(alias: str, *, fetchers: list[Any] | None = None, **kwargs: Any) -> Pipeline:
    return Pipeline(
        f"hostile-{alias}", model=Payout, filterset_class=kwargs.pop("filterset_class",
                                                                     PayoutFilterSet),
        search_fields=("narration", "reference_id", "purpose"), tenant_field="merchant_id",
        ordering=("-created_at", "-id"), ordering_fields=("created_at", "amount", "id"),
        fetchers=fetchers or [ORMFetcher(using=alias)],
        enrichers=[PrefetchEnricher("user"), PrefetchEnricher("fund_account",
                                                                auth_types={"private"})],
        register=False, **kwargs)


def view_for(pipeline: Pipeline) -> Any:
    class HostileViewSet(PipelineViewSet):
        serializer_class = PayoutSerializer

        def get_tenant(self) -> Any:
            return self.request.headers.get("X-Merchant-Id")  # raw: the pipeline converts it

        def get_auth_type(self) -> str:
            # Private by default: it may filter by fund_account and utr (hidden from public).
            return self.request.headers.get("X-Auth-Type", "private")

    HostileViewSet.pipeline = pipeline  # type: ignore[misc]
    return HostileViewSet


def call(pipeline: Pipeline, query: str = "", *, pk: Any = None, merchant: str = "1",
         **headers: str) -> Any:
    factory = APIRequestFactory()
    path = "/payouts" + (f"/{urllib.parse.quote(str(pk), safe='')}" if pk is not None else "")
    request = factory.get(f"{path}?{query}" if query else path, HTTP_X_MERCHANT_ID=merchant,
                          **headers)
    view = view_for(pipeline).as_view({"get": "retrieve" if pk is not None else "list"})
    response = view(request, pk=pk) if pk is not None else view(request)
    response.render()
    return response


def seed(alias: str) -> dict[str, Any]:
    merchants = Merchant.objects.using(alias).bulk_create(
        [Merchant(id=1, name="one"), Merchant(id=2, name="two")])
    users = MerchantUser.objects.using(alias).bulk_create(
        [MerchantUser(id=10, merchant=merchants[0], name="a", email="a@x.in"),
         MerchantUser(id=20, merchant=merchants[1], name="b", email="b@x.in")])
    payouts = Payout.objects.using(alias).bulk_create([
        Payout(id=i, merchant_id=1 if i <= 3 else 2, user=users[0 if i <= 3 else 1],
               fund_account_id=100 + i, amount=1000 * i, mode="IMPS", purpose="refund",
               reference_id=f"R{i}", narration="note", status="processed",
               created_at=NOW - dt.timedelta(hours=i), utr=None if i % 2 else f"U{i}")
        for i in range(1, 6)])
    return {"users": users, "payouts": payouts}


@pytest.fixture
def alias(engine_alias: str) -> str:
    return engine_alias


def no_queries(alias: str) -> ExitStack:
    stack = ExitStack()
    stack.contexts = [stack.enter_context(CaptureQueriesContext(connections[a]))  # type: ignore[attr-defined]
                      for a in {alias, "default"}]
    return stack


def ran_queries(stack: ExitStack) -> int:
    return sum(len(c.captured_queries) for c in stack.contexts)  # type: ignore[attr-defined]


def refused_without_queries(alias: str, pipeline: Pipeline, query: str) -> Any:
    """``pipeline``'s response to ``query``: a 400 that ran no query."""
    with no_queries(alias) as stack:
        response = call(pipeline, query)
    assert response.status_code == 400, response.content
    assert ran_queries(stack) == 0
    return response


# -- one test per row of the table ---------------------------------------------------------

@pytest.mark.parametrize(("query", "name"), [
    (f"user={BIG}", "user"),
    ("fund_account=-9223372036854775809", "fund_account"),
    (f"amount_min={2**63}", "amount_min"),
])
@DB
def test_an_integer_past_its_column_is_a_400_naming_it(alias, query, name):
    seed(alias)
    response = refused_without_queries(alias, payouts_pipeline(alias), query)
    assert list(response.data) == [name]
    assert "than or equal to" in response.data[name][0]


@DB
@pytest.mark.parametrize("merchant", [str(BIG), "abc", "1\x00"])
def test_a_tenant_the_field_cannot_hold_is_a_400_naming_the_tenant(alias, merchant):
    pipeline = payouts_pipeline(alias)
    with no_queries(alias) as stack:
        response = call(pipeline, merchant=merchant)
        retrieve = call(pipeline, pk=1, merchant=merchant)
    assert response.status_code == 400 and list(response.data) == ["tenant"]
    assert retrieve.status_code == 400 and list(retrieve.data) == ["tenant"]
    assert ran_queries(stack) == 0


@DB
def test_the_tenant_is_converted_once_by_its_field(alias):
    seed(alias)
    pipeline = payouts_pipeline(alias)
    response = call(pipeline, merchant="1")  # a string, as a header is
    assert response.status_code == 200
    assert [row["id"] for row in response.data["items"]] == [1, 2, 3]


@DB
def test_explain_with_a_tenant_the_field_cannot_hold_is_a_command_error():
    import example_project.payouts.pipelines  # noqa: F401  (registers "payouts")

    with pytest.raises(CommandError, match="--tenant 'abc'"):
        call_command("datapipe", "explain", "payouts", "", "--tenant", "abc")


@pytest.mark.parametrize(("q", "why"), [("x" * 60_000, "characters"),
                                    (" ".join(["word"] * 1_500), "characters"),
                                    (" ".join("w" * 40), "words")])
@DB
def test_a_long_q_is_a_400_and_no_store_looks_down(alias, q, why):
    metrics = RecordingMetrics()
    pipeline = payouts_pipeline(alias, metrics=metrics)
    with no_queries(alias) as stack:
        response = call(pipeline, urllib.parse.urlencode({"q": q}))
    assert response.status_code == 400 and list(response.data) == ["q"]
    assert why in response.data["q"][0]
    assert ran_queries(stack) == 0 and metrics.sources == []


@DB
def test_a_query_too_complex_for_the_database_is_the_clients_400_without_fallback():
    """The caps raised so far that SQLite refuses the expression itself: a 400, no fallback to
    the second source, no source counted as failing; in well under the deadline."""
    metrics = RecordingMetrics()
    backup = InMemoryFetcher(name="backup")
    pipeline = payouts_pipeline("default", metrics=metrics, timeout=1.0,
                                fetchers=[ORMFetcher(using="default"), backup])
    q = " ".join(f"w{i}" for i in range(10_000))
    with override_settings(DEBUG=True, DATAPIPE={"SEARCH_MAX_TERMS": 10**6,
                                                 "SEARCH_MAX_LENGTH": 10**7}):
        response = call(pipeline, urllib.parse.urlencode({"q": q}))
    assert response.status_code == 400, response.content
    assert list(response.data) == ["q"]
    assert backup.calls == [] and metrics.sources == []


@DB
def test_the_deadline_holds_with_debug_sql_logging_on_sqlite():
    """With DEBUG, Django quotes a query's parameters with queries of its own after it ran; the
    statement timeout's interrupt no longer escapes there as a bare sqlite3 error."""
    pipeline = payouts_pipeline("default", timeout=0.3)
    terms = " ".join(f"%{i}_" for i in range(400))
    with override_settings(DEBUG=True, DATAPIPE={"SEARCH_MAX_TERMS": 10**6}):
        response = call(pipeline, urllib.parse.urlencode({"q": terms}))
    assert response.status_code in (200, 400, 503, 504), response.content


@pytest.mark.parametrize(("query", "names"), [
    ("stauts=failed", ["stauts"]),
    ("page_size=5&search=x", ["page_size", "search"]),
    ("fieldz=id&highlightt=1", ["fieldz", "highlightt"]),
])
@DB
def test_an_unknown_parameter_is_a_400_naming_it(alias, query, names):
    seed(alias)
    pipeline = payouts_pipeline(alias)
    response = refused_without_queries(alias, pipeline, query)
    assert sorted(response.data) == sorted(names)
    with override_settings(DATAPIPE={"UNKNOWN_PARAMETERS": "ignore"}):
        assert call(pipeline, query).status_code == 200
    assert call(pipeline, "format=json").status_code == 200


@DB
def test_a_retrieve_takes_expand_and_format_only(alias):
    seed(alias)
    pipeline = payouts_pipeline(alias)
    assert call(pipeline, "expand=user&format=json", pk=1).status_code == 200
    response = call(pipeline, "status=paid&limit=3", pk=1)
    assert response.status_code == 400 and sorted(response.data) == ["limit", "status"]
    with override_settings(DATAPIPE={"UNKNOWN_PARAMETERS": "ignore"}):
        assert call(pipeline, "status=paid", pk=1).status_code == 200


@pytest.mark.parametrize(("query", "name"), [
    ("status=processed&status=failed", "status"),
    ("ordering=amount&ordering=id", "ordering"),
    ("limit=1&limit=2", "limit"),
    ("created_at_after=2026-01-01T00:00:00Z&created_at_after=2026-01-02T00:00:00Z",
     "created_at_after"),
])
@DB
def test_a_single_valued_parameter_given_twice_is_a_400(alias, query, name):
    pipeline = payouts_pipeline(alias)
    response = call(pipeline, query)
    assert response.status_code == 400 and list(response.data) == [name]


@DB
@pytest.mark.parametrize("value", ["maybe", "1", "yes", "TRUE", "2", "3"])
def test_a_non_boolean_for_a_boolean_filter_is_a_400(alias, value):
    seed(alias)
    pipeline = payouts_pipeline(alias)
    response = call(pipeline, f"utr__isnull={value}")
    assert response.status_code == 400 and list(response.data) == ["utr__isnull"]
    assert [r["id"] for r in call(pipeline, "utr__isnull=true").data["items"]] == [1, 3]


@pytest.mark.parametrize("query", ["cursor=", "limit=", "offset=", "q=", "ordering=",
                                   "expand=", "status=", "cursor=&offset=2"])
@DB
def test_an_empty_parameter_is_an_absent_one(alias, query):
    seed(alias)
    response = call(payouts_pipeline(alias), query)
    assert response.status_code == 200, response.content


@DB
def test_messages_quote_a_hundred_characters_at_most_and_names_are_capped(alias):
    pipeline = payouts_pipeline(alias)
    for query, name in [("ordering=" + "a" * 100_000, "ordering"),
                        ("status=" + "b" * 100_000, "status"),
                        ("expand=" + ",".join(f"n{i}" for i in range(1_000)), "expand"),
                        ("ordering=" + ",".join(["amount"] * 50), "ordering"),
                        ("c" * 10_000 + "=1", "c" * 100 + "...")]:
        response = call(pipeline, query)
        assert response.status_code == 400, query[:50]
        assert list(response.data) == [name]
        assert len(response.data[name]) <= 6
        assert all(len(message) < 300 for message in response.data[name]), query[:50]


class UserChoiceFilterSet(django_filters.FilterSet):
    """django-filter's default for a foreign key in Meta.fields: a ModelChoiceFilter over
    ``MerchantUser.objects.all()`` on the default database."""

    class Meta:
        model = Payout
        fields = ["user"]


@DB
def test_a_model_choice_filter_runs_no_query_and_another_tenants_id_reads_like_a_missing_one(
        alias):
    rows = seed(alias)
    pipeline = payouts_pipeline(alias, filterset_class=UserChoiceFilterSet)
    other_tenants_user = rows["users"][1].pk
    with CaptureQueriesContext(connections["default"]) as default_queries:
        foreign = call(pipeline, f"user={other_tenants_user}")
        missing = call(pipeline, "user=999999")
    assert foreign.status_code == missing.status_code == 200
    assert foreign.data["items"] == missing.data["items"] == []
    if alias != "default":
        assert default_queries.captured_queries == []  # the primary is never asked
    assert call(pipeline, "user=abc").status_code == 400
    assert [r["id"] for r in call(pipeline, f"user={rows['users'][0].pk}").data["items"]] \
        == [1, 2, 3]


def test_a_failure_body_is_generic_and_source_headers_can_be_dropped(down_alias):
    pipeline = payouts_pipeline("down", fetchers=[ORMFetcher(using="down", name="appdb")])
    response = call(pipeline)
    assert response.status_code == 503
    assert response.data == {"detail": "No data source is available right now.",
                             "code": "sources_unavailable"}
    assert response["X-Datapipe-Unavailable"] == "appdb" and response["Retry-After"]
    with override_settings(DEBUG=True):
        debug = call(pipeline)
    assert "appdb" in debug.data["reasons"]
    with override_settings(DATAPIPE={"SOURCE_HEADERS": False}):
        quiet = call(pipeline)
    assert "X-Datapipe-Unavailable" not in quiet and quiet["Retry-After"]


@DB
def test_source_headers_false_drops_the_source_header():
    assert "X-Datapipe-Source" in call(payouts_pipeline("default"))
    with override_settings(DATAPIPE={"SOURCE_HEADERS": False}):
        ok = call(payouts_pipeline("default"))
    assert ok.status_code == 200 and "X-Datapipe-Source" not in ok


@DB
def test_the_no_fetcher_400_names_no_internal_source():
    class Opaque(PayoutFilterSet):
        secret = django_filters.CharFilter(method="by_secret")

        def by_secret(self, queryset, name, value):
            return queryset

    pipeline = payouts_pipeline("default", filterset_class=Opaque,
                                fetchers=[ORMFetcher(using="default", name="appdb-internal")])
    response = call(pipeline, "secret=x")
    assert response.status_code == 400 and response.data["code"] == "no_fetcher"
    assert "appdb-internal" not in response.content.decode()


def test_a_path_above_latin_1_is_a_404_in_the_example(tmp_path):
    """opentelemetry-instrumentation-django (open-telemetry/opentelemetry-python-contrib#3237)
    failed on it with a 500; the example's WSGIPathMiddleware guards it."""
    code = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(raise_request_exception=False, HTTP_HOST='127.0.0.1')\n"
        "print(c.get('/%E2%82%AC').status_code, c.get('/v1/payouts/%E2%82%AC').status_code,"
        " c.get('/%F0%9F%92%B8?q=%E2%82%AC').status_code)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings",
           "DATAPIPE_EXAMPLE_VAR": str(tmp_path), "DJANGO_DEBUG": "0",
           "DATAPIPE_EXAMPLE_DB": "sqlite", "DATAPIPE_EXAMPLE_SEARCH": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["404", "403", "404"], out.stderr[-2000:]


# -- arbitrary query strings --------------------------------------------------------------------

KNOWN = sorted({*PayoutFilterSet.base_filters, "status__in", "created_at_after",
                "created_at_before", "q", "ordering", "limit", "offset", "cursor", "expand",
                "expand[]", "format"})
texts = st.text(st.characters(codec="utf-8"), max_size=30)
values = st.one_of(
    texts,
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "true", "false", "null", "processed", "-amount,id", "user",
                     "fund_account.contact", "1e400", "nan", "\x00", "2026-01-01T00:00:00Z",
                     "a" * 400]),
)
pairs = st.lists(st.tuples(st.one_of(st.sampled_from(KNOWN), texts), values), max_size=6)


def check_query(alias: str, pipeline: Pipeline, items: list[tuple[str, str]], *,
                pk: Any = None) -> None:
    query = urllib.parse.urlencode(items)
    with no_queries(alias) as stack:
        response = call(pipeline, query, pk=pk)
        queries = ran_queries(stack)
    assert response.status_code < 500, (query, response.content[:500])
    if response.status_code == 400 and "code" not in response.data:
        given_names = {name for name, _ in items}
        for name in response.data:
            assert name in {"tenant", "non_field_errors"} or any(
                g.startswith(name.removesuffix("...")) for g in given_names), (name, query)
        assert queries == 0, query


@DB
@pytest.mark.parametrize("operation", ["list", "retrieve"])
def test_arbitrary_query_strings_never_get_a_5xx(alias, operation):
    seed(alias)
    pipeline = payouts_pipeline(alias)

    @hsettings(max_examples=60, deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
    @given(items=pairs, pk=st.one_of(st.integers(-(2**70), 2**70), texts.filter(
        lambda t: t and "/" not in t and t not in {".", ".."})))
    def run(items: list[tuple[str, str]], pk: Any) -> None:
        check_query(alias, pipeline, items, pk=pk if operation == "retrieve" else None)

    run()


@DB
@pytest.mark.parametrize("pk", ["0.5", "1.json", "%E2%82%AC", "1%00"])
def test_any_malformed_id_is_the_views_json_404(pk):
    from rest_framework.test import APIClient

    response = APIClient().get(f"/v1/items/{pk}", HTTP_X_TENANT="t1")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


class BadPatternFetcher(ORMFetcher):
    """A source whose query carries a regular expression the database refuses (as a client's
    pattern would): the request's fault, not the store's."""

    def filtered_queryset(self, request):
        return super().filtered_queryset(request).filter(narration__regex="(")


@DB
@pytest.mark.parametrize("server", ["primary", "archive"])
def test_a_value_the_database_refuses_is_the_clients_400_on_postgresql_and_mariadb(server):
    from tests.conftest import require_alias

    require_alias(server)
    metrics = RecordingMetrics()
    backup = InMemoryFetcher(name="backup")
    pipeline = payouts_pipeline(server, metrics=metrics,
                                fetchers=[BadPatternFetcher(using=server), backup])
    response = call(pipeline)
    assert response.status_code == 400, response.content
    assert list(response.data) == ["non_field_errors"]
    assert backup.calls == [] and metrics.sources == []
