"""``manage.py datapipe list | explain | health`` through ``call_command``."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from datapipe_django import Pipeline, registry
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.replicas import forget_replica_status
from datapipe_django.test import InMemoryFetcher
from tests.conftest import require_alias
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def item(pk: int, tenant: str = "t1", status: str = "queued") -> Item:
    return Item(id=pk, tenant=tenant, name=f"n{pk}", status=status, amount=pk,
                created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())


def run(*args: str) -> str:
    out = StringIO()
    call_command("datapipe", *args, stdout=out, no_color=True)
    return out.getvalue()


def fails(*args: str) -> tuple[str, CommandError]:
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("datapipe", *args, stdout=out, no_color=True)
    return out.getvalue(), info.value


@pytest.fixture
def only(monkeypatch):
    """Make the registry hold just the pipelines given (the suite's own stay untouched)."""

    def use(*pipelines: Pipeline) -> None:
        monkeypatch.setattr(registry, "_pipelines", {p.name: p for p in pipelines})

    return use


def pipeline(name: str, *fetchers, **kwargs) -> Pipeline:
    return Pipeline(name, model=Item, fetchers=list(fetchers), tenant_field="tenant",
                    ordering=("-created_at", "-id"), register=False, **kwargs)


def declines(request):
    return False


# -- list ----------------------------------------------------------------------------------------

def test_list_names_every_registered_pipeline_and_its_declaration():
    text = run("list")
    assert "test-items  testapp.Item  SEQUENTIAL  timeout 5 s" in text
    assert "  fetchers:  default (ORMFetcher on 'default')" in text
    assert "  enrichers: owner, category [private]" in text
    assert "  tenant:    tenant" in text
    data = {p["name"]: p for p in json.loads(run("list", "--json"))}
    items = data["test-items"]
    assert items["model"] == "testapp.Item"
    assert items["ordering"] == ["-created_at", "-id"]
    assert "status" in items["filters"] and items["search_fields"] == ["name"]
    assert items["enrichers"][1] == {"name": "category", "kind": "RelatedEnricher",
                                     "auth_types": ["private"], "required": False,
                                     "always": False}


def test_list_without_pipelines(only):
    only()
    assert "No pipeline is registered" in run("list")



def test_list_shows_the_query_parameters_a_client_sends():
    text = run("list")
    block = text[text.index("test-items  testapp.Item"):]
    line = next(row for row in block.splitlines() if row.startswith("  filters:"))
    names = line.split(":", 1)[1].replace(" ", "").split(",")
    # A range filter reads two parameters, named as django-filter names them; the filter's own
    # name is not a parameter.
    assert {"created_at_after", "created_at_before", "day_after", "day_before",
            "amount_range_min", "amount_range_max", "amount_lookup", "amount_lookup_lookup",
            "status", "status__in"} <= set(names)
    assert "created_at" not in names and "amount_range" not in names
    assert names == sorted(names)
    items = {p["name"]: p for p in json.loads(run("list", "--json"))}["test-items"]
    assert items["filters"] == names
    assert items["filterset"]["created_at"] == ["created_at_after", "created_at_before"]
    assert items["filterset"]["status"] == ["status"]


@override_settings(DATAPIPE={"PRIMARY": "nowhere", "TIMEOUTS": 1})
def test_the_commands_run_when_system_checks_fail_and_name_them(capsys):
    from datapipe_django.management.commands.datapipe import Command

    # As from the shell (run_from_argv runs the checks first, unlike call_command).
    Command().run_from_argv(["manage.py", "datapipe", "list"])
    captured = capsys.readouterr()
    assert "test-items  testapp.Item" in captured.out
    assert "(datapipe_django.E011) settings.DATAPIPE['PRIMARY'] names the database alias " \
           "'nowhere'" in captured.err
    assert "(datapipe_django.W001)" in captured.err
    assert "datapipe runs despite the failing checks (datapipe_django.E011)" in captured.err
    assert "datapipe_django" not in captured.out.split("test-items")[0]  # nothing before it


def test_a_warning_alone_is_reported_but_not_called_a_failure(capsys, only):
    from datapipe_django.management.commands.datapipe import Command
    from tests.testapp.pipelines import items

    only(items)  # the suite's other pipelines may have warnings of their own (W014)
    with override_settings(DATAPIPE={"TIMEOUTS": 1}):
        Command().run_from_argv(["manage.py", "datapipe", "list"])
    err = capsys.readouterr().err
    assert "(datapipe_django.W001)" in err and "Did you mean 'TIMEOUT'?" in err
    assert "despite the failing checks" not in err
    with override_settings(DATAPIPE={}):
        Command().run_from_argv(["manage.py", "datapipe", "list"])
    assert capsys.readouterr().err == ""


# -- explain ---------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_explain_prints_verdicts_sql_strategy_and_enrichers():
    text = run("explain", "test-items", "status=queued&limit=2&expand[]=owner&expand[]=category",
               "--tenant", "t1", "--auth-type", "private")
    assert "Pipeline test-items (testapp.Item): SEQUENTIAL, timeout 5 s" in text
    assert "Request: list, tenant 't1', auth type 'private'" in text
    assert "  specification: Eq(field='status', value='queued')" in text
    assert "  1. default (ORMFetcher) serves" in text
    assert "       database: default" in text
    # The SQL, with its parameters quoted by the driver.
    assert "\"testapp_item\".\"tenant\" = 't1'" in text
    assert "\"testapp_item\".\"status\" = 'queued'" in text
    assert "LIMIT 3" in text
    assert "default alone serves the page, asked for 3 rows from offset 0." in text
    assert "  owner (RelatedEnricher): runs (asked for)" in text
    assert "  category (RelatedEnricher): runs (asked for)" in text
    public = run("explain", "test-items", "limit=2", "--tenant", "t1")
    assert "  category (RelatedEnricher): not for auth type 'public'" in public
    assert "  owner (RelatedEnricher): not asked for" in public


@pytest.mark.django_db
def test_explain_shows_declines_and_the_sequential_strategy(only):
    only(pipeline("cmd-tiered", InMemoryFetcher([item(1)], name="recent", can_handle=declines),
                  ORMFetcher("default", name="appdb"), ORMFetcher("default", name="archive")))
    text = run("explain", "cmd-tiered", "offset=4&limit=3", "--tenant", "t1")
    assert "  1. recent (InMemoryFetcher) declines: declined by declines" in text
    assert "  2. appdb (ORMFetcher) serves" in text and "  3. archive (ORMFetcher) serves" in text
    assert ("SEQUENTIAL: appdb first, then archive only while fewer than 8 rows are merged or "
            "the source before is unavailable; each asked for 8 rows from offset 0; the merged "
            "rows are sliced from 4.") in text
    assert text.count("LIMIT 8") == 2


@pytest.mark.django_db
def test_explain_a_caching_wrapper_shows_its_key_and_what_it_wraps(only):
    from datapipe_django.fetchers import CachedFetcher

    cached = CachedFetcher(ORMFetcher("default", name="appdb"))
    only(pipeline("cmd-cached", cached))
    text = run("explain", "cmd-cached", "limit=4", "--tenant", "t1")
    assert "  1. appdb (CachedFetcher) serves" in text
    assert "       cache alias: default" in text
    key = next(line for line in text.splitlines() if "cache key: " in line)
    assert ":cmd-cached:" in key and "not cached" not in key, key
    assert "       wraps: ORMFetcher 'appdb'" in text
    assert "       database: default" in text and "LIMIT 5" in text


def test_explain_prints_a_search_fetchers_query_as_json(only):
    class Search(InMemoryFetcher):
        def explain(self, request):
            return {"index": "payouts", "query": json.dumps(
                {"query": {"bool": {"filter": [{"term": {"tenant": request.tenant}}]}},
                 "size": request.size})}

    only(pipeline("cmd-search", Search(name="search")))
    text = run("explain", "cmd-search", "limit=2", "--tenant", "t1")
    assert "       index: payouts" in text
    assert ('       query: {\n         "query": {\n           "bool": {\n             "filter": ['
            in text)
    assert '"size": 3' in text


def test_explain_a_request_that_no_source_serves(only):
    only(pipeline("cmd-none", InMemoryFetcher(name="a", can_handle=declines)))
    text = run("explain", "cmd-none", "", "--tenant", "t1")
    assert "No source can serve this request: it would fail with NoFetcher (400)." in text


def test_explain_an_invalid_request_lists_the_errors_and_fails():
    text, error = fails("explain", "test-items", "limit=0&status=paid&ordering=nope",
                        "--tenant", "t1")
    assert error.returncode == 1
    assert "Invalid request:" in text
    assert "  limit: Ensure this value is greater than or equal to 1." in text
    assert "  status: Select a valid choice." in text
    assert "  ordering: Unknown ordering field 'nope'." in text


def test_explain_needs_the_tenant_and_a_known_pipeline():
    _, error = fails("explain", "test-items", "")
    assert "No tenant is associated with these credentials. Pass --tenant." in str(error)
    _, error = fails("explain", "nope", "")
    assert "No pipeline named 'nope' (registered: " in str(error)


@pytest.mark.django_db
def test_explain_execute_prints_the_tree_and_the_serving_source():
    Item.objects.bulk_create([item(1), item(2), item(3), item(4, tenant="t2")])
    text = run("explain", "test-items", "limit=2&expand[]=owner", "--tenant", "t1", "--execute")
    tree = text[text.index("Execution:"):]
    lines = [line.rstrip() for line in tree.splitlines()]
    assert lines[1].startswith("  test-items list")
    assert lines[1].endswith("served by default, 2 items")
    assert [line.strip(" │├└─").split()[0] for line in lines[2:9]] == [
        "validate", "fetch", "source", "transform", "enrich", "enricher", "build"]
    assert "│  └─ source default" in lines[4] and lines[4].endswith("ok, 3 rows")
    assert "│  └─ enricher owner" in lines[7] and lines[7].endswith("ok")
    assert lines[3].endswith("no fallback")
    assert lines[-1] == "  served by default: 2 items, has_more true"


@pytest.mark.django_db
def test_explain_execute_shows_fallback_and_outages(only):
    only(pipeline("cmd-fallback", InMemoryFetcher([item(1)], name="recent", can_handle=declines),
                  InMemoryFetcher(name="replica", available=False),
                  InMemoryFetcher([item(1), item(2)], name="archive")))
    text = run("explain", "cmd-fallback", "", "--tenant", "t1", "--execute")
    assert "fallback: unavailable" in text
    assert "source replica" in text and "unavailable, switched off, error SourceUnavailable" \
        in text
    assert "source recent" in text and "declined: declined by declines" in text
    assert "served by archive: 2 items, has_more false" in text


def test_explain_execute_of_a_failing_request_prints_the_tree_and_fails(only):
    only(pipeline("cmd-down", InMemoryFetcher(name="a", available=False)))
    text, error = fails("explain", "cmd-down", "", "--tenant", "t1", "--execute")
    assert error.returncode == 1
    assert str(error).startswith("The execution failed: sources_unavailable:")
    assert "error sources_unavailable" in text
    assert "failed: sources_unavailable" in text


@pytest.mark.django_db
def test_explain_json_and_a_retrieve():
    Item.objects.bulk_create([item(7)])
    data = json.loads(run("explain", "test-items", "", "--tenant", "t1", "--pk", "7",
                          "--execute", "--json"))
    assert data["request"]["pk"] == "7" and data["valid"] is True
    assert data["strategy"] == ("Retrieve: default in priority order; the first source that "
                                "has the row settles it.")
    [fetcher] = data["fetchers"]
    assert fetcher["serves"] is True and "\"id\" = 7" in fetcher["details"]["sql"]
    assert data["execution"]["result"]["count"] == 1
    assert data["execution"]["tree"]["label"] == "test-items retrieve"


@pytest.mark.django_db
def test_explain_db_plan_asks_the_database():
    text = run("explain", "test-items", "status=queued", "--tenant", "t1", "--db-plan")
    plan = text[text.index("database plan:"):]
    assert "SCAN" in plan or "SEARCH" in plan  # SQLite's EXPLAIN QUERY PLAN


@pytest.mark.postgres
@pytest.mark.mysql
@pytest.mark.django_db(databases=["primary", "archive"])
def test_explain_quotes_parameters_with_each_engines_driver(only):
    require_alias("primary")
    require_alias("archive")
    only(pipeline("cmd-engines", ORMFetcher("primary"), ORMFetcher("archive"),
                  fallback=__import__("datapipe_django").FallbackMode.PARALLEL))
    text = run("explain", "cmd-engines", "", "--tenant", "o'brien")
    assert "\"testapp_item\".\"tenant\" = 'o''brien'" in text  # PostgreSQL
    assert "`testapp_item`.`tenant` = 'o\\'brien'" in text  # MariaDB
    assert "PARALLEL: primary, archive read at once and merged" in text


# -- health ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_health_all_up(only):
    only(pipeline("cmd-ok", ORMFetcher("default"), InMemoryFetcher(name="memory")))
    text = run("health")
    assert "Databases:" in text and "  default (primary): ok " in text
    assert "Caches:" in text and "  default: ok " in text
    assert "LocMemCache" in text
    assert "  cmd-ok: ok  default up, memory unchecked" in text
    report = json.loads(run("health", "--json"))
    assert [c["name"] for c in report["checks"]] == ["default", "default"]
    assert report["pipelines"] == [{"name": "cmd-ok", "ok": True,
                                    "sources": {"default": True, "memory": None}}]


def test_health_fails_when_a_required_source_is_down(only, down_alias):
    only(pipeline("cmd-archive", ORMFetcher("default"), ORMFetcher(down_alias, name="archive")))
    text, error = fails("health")
    assert error.returncode == 1
    assert "  down: DOWN " in text and "unreachable:" in text
    assert "  cmd-archive: ok  default up, archive down" in text
    assert str(error) == "down: down"


def test_health_fails_when_a_pipeline_has_no_source(only, down_alias):
    only(pipeline("cmd-dead", ORMFetcher(down_alias)))
    text, error = fails("health", "cmd-dead")
    assert "  cmd-dead: DOWN  down down" in text
    assert str(error) == "down: down; pipelines without a source: cmd-dead"


def test_a_down_replica_or_cache_is_optional_unless_strict(only, down_alias):
    only(pipeline("cmd-replica", ORMFetcher(down_alias), ORMFetcher("default")))
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "broken": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": "redis://127.0.0.1:9/0",
                         "OPTIONS": {"socket_connect_timeout": 0.5}}}
    with override_settings(DATAPIPE={"REPLICAS": [down_alias], "CACHE": "broken"},
                           CACHES=caches):
        forget_replica_status()
        try:
            text = run("health")
            assert "  down (replica): down (optional)" in text
            assert "  broken: down (optional)" in text and "unreachable:" in text
            assert "  cmd-replica: ok  down down, default up" in text
            _, error = fails("health", "--strict")
            assert str(error) == "down: down, broken"
        finally:
            forget_replica_status()


@pytest.mark.django_db
def test_health_asks_fetchers_that_report_their_own(only):
    class Search(InMemoryFetcher):
        def health(self):
            return False, "cluster status red"

    only(pipeline("cmd-search", ORMFetcher("default"), Search(name="search")))
    text, error = fails("health", "cmd-search")
    assert "Other sources:" in text
    assert "  cmd-search.search (Search): DOWN " in text and "cluster status red" in text
    assert str(error) == "down: cmd-search.search"


@pytest.mark.postgres
@pytest.mark.django_db(databases=["primary", "replica"])
def test_health_reports_the_real_standbys_lag(only):
    require_alias("replica")
    only(pipeline("cmd-standby", ORMFetcher("replica"), ORMFetcher("primary")))
    with override_settings(DATAPIPE={"PRIMARY": "primary", "REPLICAS": ["replica"]}):
        forget_replica_status()
        try:
            text = run("health", "cmd-standby")
        finally:
            forget_replica_status()
    assert "  replica (replica): ok " in text and "PostgreSQL, lag " in text
    assert "(max 5 s)" in text
    assert "  primary (primary): ok " in text


@pytest.mark.django_db
def test_explain_execute_keeps_log_lines_out_of_the_report(only):
    import logging

    from datapipe_django.middleware import LoggingMiddleware

    only(pipeline("cmd-logged", InMemoryFetcher([item(1), item(2)], name="memory"),
                  middleware=[LoggingMiddleware()]))
    console = StringIO()
    handler = logging.StreamHandler(console)
    logger = logging.getLogger("datapipe_django")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        out, err = StringIO(), StringIO()
        call_command("datapipe", "explain", "cmd-logged", "", "--tenant", "t1", "--execute",
                     stdout=out, stderr=err, no_color=True)
        data = json.loads(run("explain", "cmd-logged", "", "--tenant", "t1", "--execute",
                              "--json"))
    finally:
        logger.removeHandler(handler)
        logger.level = level
    assert console.getvalue() == ""  # the console handler wrote nothing into the report
    assert "items from" not in out.getvalue()
    assert out.getvalue().rstrip().endswith("served by memory: 2 items, has_more false")
    assert err.getvalue().splitlines() == [
        "Logged during the execution (1 records):",
        err.getvalue().splitlines()[1]]
    assert "INFO datapipe_django.pipeline cmd-logged list: 2 items from memory" in err.getvalue()
    [record] = data["execution"]["log"]
    assert record["logger"] == "datapipe_django.pipeline"
    assert record["message"].startswith("cmd-logged list: 2 items from memory")
    # Once the command is done, the handler writes again (its holding filter is gone).
    handler.handle(logging.makeLogRecord({"msg": "direct"}))
    assert console.getvalue() == "direct\n"


@pytest.mark.django_db
def test_explain_a_retrieve_of_a_missing_id_says_not_found_and_fails():
    Item.objects.bulk_create([item(7), item(8, tenant="t2")])
    text, error = fails("explain", "test-items", "", "--tenant", "t1", "--pk", "999",
                        "--execute")
    assert error.returncode == 1
    assert str(error) == "Not found: no source has pk '999' for tenant 't1'."
    assert text.rstrip().endswith("not found: no source has pk '999'")
    # Another tenant's row reads exactly like a missing one.
    _, error = fails("explain", "test-items", "", "--tenant", "t1", "--pk", "8", "--execute")
    assert str(error) == "Not found: no source has pk '8' for tenant 't1'."
    text = run("explain", "test-items", "", "--tenant", "t1", "--pk", "7", "--execute")
    assert text.rstrip().endswith("served by default: 1 items, has_more false")
    data = json.loads(run("explain", "test-items", "", "--tenant", "t1", "--pk", "7",
                          "--execute", "--json"))
    assert data["execution"]["result"]["found"] is True


def test_explain_shows_each_sources_holds_and_verdict(only):
    from datapipe_django.specs import Range

    cut = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    only(pipeline("cmd-holds", InMemoryFetcher(name="appdb", holds=Range("created_at", gte=cut)),
                  InMemoryFetcher(name="replica", mirror_of="appdb"),
                  InMemoryFetcher(name="archive")))
    text = run("explain", "cmd-holds", "limit=3", "--tenant", "t1")
    assert ("  1. appdb (InMemoryFetcher) serves the prefix created_at ≥ "
            "2026-01-01 00:00:00+00:00; later sources are asked only beyond it") in text
    assert "       holds: created_at ≥ 2026-01-01 00:00:00+00:00" in text
    assert "  2. replica (InMemoryFetcher) not read: mirror of appdb, which answered" in text
    assert ("  3. archive (InMemoryFetcher) serves the rest, beyond created_at ≥ "
            "2026-01-01 00:00:00+00:00") in text
    text = run("explain", "cmd-holds", "limit=3&ordering=created_at", "--tenant", "t1")
    assert "  1. appdb (InMemoryFetcher) skipped: created_at is not aligned with its holds" in text
    assert "  3. archive (InMemoryFetcher) serves alone: it holds every matching row" in text
    data = json.loads(run("explain", "cmd-holds", "limit=3", "--tenant", "t1", "--json"))
    assert [(f["name"], f["action"]) for f in data["fetchers"]] == [
        ("appdb", "prefix"), ("replica", "not_read"), ("archive", "serves")]
