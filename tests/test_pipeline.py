"""Pipeline declaration, registry, stages, middleware and settings."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import datapipe_django
from datapipe_django import FallbackMode, Pipeline, PipelineRequest, ValidationFailed, registry
from datapipe_django.conf import datapipe_settings
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.test import InMemoryFetcher
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rows(n=5):
    return [Item(id=i, tenant="t1", name=f"n{i}", status="queued", amount=i, created_at=BASE
                 + dt.timedelta(minutes=i), day=BASE.date()) for i in range(1, n + 1)]


def make(name="p-test", **kwargs):
    kwargs.setdefault("fetchers", [InMemoryFetcher(rows())])
    kwargs.setdefault("register", False)
    return Pipeline(name, model=Item, **kwargs)


# -- declaration ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fetchers": []}, "`fetchers` is empty"),
        ({"fetchers": [object()]}, "has no `name`"),
        ({"fetchers": [ORMFetcher("default"), ORMFetcher("default")]}, "two fetchers"),
        ({"tenant_field": "merchant"}, "`tenant_field` 'merchant'"),
        ({"ordering": ("-nope",)}, "ordering field 'nope'"),
        ({"ordering": ("owner__name",)}, "ordering field 'owner__name'"),
        ({"ordering_fields": ("items",)}, "ordering field 'items'"),
        ({"timeout": 0}, "`timeout` must be positive"),
        ({"max_workers": 0}, "`max_workers`"),
        ({"fallback": "parallel"}, "`fallback` must be a FallbackMode"),
    ],
)
def test_configuration_mistakes_are_improperly_configured(kwargs, message):
    with pytest.raises(ImproperlyConfigured, match=message) as info:
        make(**kwargs)
    assert "p-test" in str(info.value) or "Pipeline" in str(info.value)


def test_a_duplicate_name_is_improperly_configured():
    first = make("p-dup", register=True)
    try:
        with pytest.raises(ImproperlyConfigured, match="already registered"):
            make("p-dup", register=True)
        assert registry.get_pipeline("p-dup") is first
    finally:
        registry.unregister("p-dup")


def test_fetchers_are_ordered_by_priority_then_position():
    a, b, c = (InMemoryFetcher(name="a"), InMemoryFetcher(name="b", priority=-1),
               InMemoryFetcher(name="c"))
    assert [f.name for f in make(fetchers=[a, b, c]).fetchers] == ["b", "a", "c"]


# -- stages and middleware -------------------------------------------------------------------

def test_stages_run_in_order_with_middleware_outermost_first():
    calls = []

    def outer(stage, state, call_next):
        calls.append(f"outer>{stage}")
        call_next(state)
        calls.append(f"outer<{stage}")

    def inner(stage, state, call_next):
        calls.append(f"inner>{stage}")
        call_next(state)

    p = make(middleware=[outer]).use(inner)
    result = p.execute(tenant=None)
    assert [r.pk for r in result.items] == [1, 2, 3, 4, 5]
    stages = ["validate", "fetch", "transform", "enrich", "build"]
    assert calls[:3] == ["outer>validate", "inner>validate", "outer<validate"]
    assert [c.split(">")[1] for c in calls if c.startswith("outer>")] == stages
    assert set(result.timings) == set(stages)


def test_add_stage_and_transformers():
    def drop_odd(items, state):
        return [i for i in items if i.pk % 2 == 0]

    def mark(state):
        state.extra["marked"] = len(state.items)

    p = make(transformers=[drop_odd]).add_stage(mark, before="enrich")
    assert [s.name for s in p.stages] == ["validate", "fetch", "transform", "mark", "enrich",
                                          "build"]
    result = p.execute()
    assert [r.pk for r in result.items] == [2, 4]
    with pytest.raises(ImproperlyConfigured, match="no stage named"):
        p.add_stage(mark, name="other", after="nope")


def test_validators_and_filter_errors_stop_before_fetch():
    fetcher = InMemoryFetcher(rows())

    def no_search(request):
        if request.search:
            raise ValidationFailed({"q": ["Search is switched off."]})

    p = make(fetchers=[fetcher], filterset_class=ItemFilterSet, validators=[no_search],
             search_fields=("name",))
    with pytest.raises(ValidationFailed) as info:
        p.execute(search="x")
    assert info.value.errors == {"q": ["Search is switched off."]}
    with pytest.raises(ValidationFailed) as info:
        p.execute(filters={"amount": "ten", "status": "nope"}, limit=500)
    assert set(info.value.errors) == {"amount", "status", "limit"}
    assert fetcher.calls == []


def test_a_filter_without_spec_makes_sources_decline():
    p = make(filterset_class=ItemFilterSet)
    with pytest.raises(datapipe_django.NoFetcher, match="opaque"):
        p.execute(filters={"opaque": "x"})
    assert [r.pk for r in p.execute(filters={"custom": "N3"}).items] == [3]


def test_settings_are_read_lazily_and_follow_override_settings():
    p = make()
    assert p.timeout == 5.0
    with override_settings(DATAPIPE={"TIMEOUT": 1.5, "DEFAULT_LIMIT": 2, "MAX_LIMIT": 3}):
        assert datapipe_settings.MAX_LIMIT == 3
        assert p.timeout == 1.5
        assert len(p.execute().items) == 2
        with pytest.raises(ValidationFailed):
            p.execute(limit=4)
    assert datapipe_settings.MAX_LIMIT == 100
    with pytest.raises(AttributeError):
        datapipe_settings.NOT_A_SETTING  # noqa: B018


def test_fail_fast_turns_an_optional_enricher_failure_into_a_failure():
    from datapipe_django.enrichers import BaseEnricher

    class Boom(BaseEnricher):
        def enrich(self, items, context):
            raise RuntimeError("boom")

    relaxed = make(enrichers=[Boom("x")])
    assert relaxed.execute(expand={"x"}).errors == [{"enricher": "x", "code": "failed"}]
    strict = make(enrichers=[Boom("x")], fail_fast=True)
    with pytest.raises(datapipe_django.EnrichmentFailed):
        strict.execute(expand={"x"})


def test_modes_are_exported():
    assert {m.value for m in FallbackMode} == {"sequential", "first_success", "parallel"}


def test_public_names_are_exported():
    import datapipe_django.enrichers
    import datapipe_django.errors
    import datapipe_django.fetchers
    import datapipe_django.rest
    import datapipe_django.specs

    for module in (datapipe_django, datapipe_django.fetchers, datapipe_django.enrichers,
                   datapipe_django.errors, datapipe_django.rest, datapipe_django.specs):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
    public = {n for n in dir(datapipe_django) if not n.startswith("_")}
    assert {"Pipeline", "PipelineRequest", "PipelineResult", "State", "FallbackMode",
            "ValidationFailed", "SourcesUnavailable"} <= public
    assert PipelineRequest(expand="a,b.c", ordering="-x,y").expand == {"a", "b.c"}


def test_the_result_lives_in_state_and_the_old_module_re_exports_it():
    import datapipe_django.result
    import datapipe_django.state

    result = make().execute(tenant=None)
    assert type(result) is datapipe_django.state.PipelineResult
    assert datapipe_django.result.PipelineResult is datapipe_django.state.PipelineResult
    assert datapipe_django.PipelineResult is datapipe_django.state.PipelineResult


# -- duck-typed components: the smallest thing that works -----------------------------------------

class Stamp:
    """The smallest enricher: ``name``, ``required``, ``can_enrich``, ``enrich``; no base class."""

    name, required = "stamp", False

    def can_enrich(self, auth_type):
        return auth_type != "public"

    def enrich(self, items, context):
        for item in items:
            item.stamp = f"{context.pipeline}:{item.pk}"


def test_a_duck_typed_enricher_runs_with_the_base_class_defaults():
    from datapipe_django.enrichers import BaseEnricher, Enricher

    stamp = Stamp()
    assert isinstance(stamp, Enricher) and not isinstance(stamp, BaseEnricher)
    pipeline = make(enrichers=[stamp], parallel_enrichment=True)
    seen = pipeline.enrichers[0]
    assert isinstance(seen, BaseEnricher) and seen.wrapped is stamp
    assert (seen.paths(), seen.always, seen.join, seen.auth_types) == (("stamp",), False, False,
                                                                       None)
    assert seen.needs(Item) is None and seen.check(pipeline) == []
    result = pipeline.execute(expand={"stamp"}, limit=3)
    assert [item.stamp for item in result.items] == ["p-test:1", "p-test:2", "p-test:3"]
    assert result.expand == {"stamp"} and result.errors == []
    assert pipeline.expandable("public") == frozenset()  # its own can_enrich is the one asked
    with pytest.raises(ValidationFailed, match="expand"):
        pipeline.execute(expand={"stamp"}, auth_type="public")


def test_a_duck_typed_enricher_keeps_the_hooks_it_has():
    class Both(Stamp):
        name, always, paths = "both", True, ("both", "both.more")

        def load(self, items, context):
            return {item.pk: item.pk * 10 for item in items}

        def apply(self, items, loaded, context):
            for item in items:
                item.both = loaded[item.pk]

        def runs_inline(self, items, context):
            return True

    pipeline = make(enrichers=[Both()])
    seen = pipeline.enrichers[0]
    assert seen.paths() == ("both", "both.more") and seen.always
    result = pipeline.execute(limit=2)
    assert [item.both for item in result.items] == [10, 20]  # always: not asked for, runs
    assert result.expand == {"both", "both.more"}


class Rows:
    """The smallest fetcher: ``name``, ``can_handle``, ``fetch``; no base class, no priority."""

    name = "rows"

    def __init__(self, items):
        self.items, self.asked = items, []

    def can_handle(self, request):
        return True

    def fetch(self, request):
        from datapipe_django.fetchers import FetchResult

        self.asked.append(request)
        ordered = sorted((i for i in self.items if request.after is None
                          or request.ordering.is_after(i, request.after)), key=request.ordering.key)
        page = ordered[request.offset: request.offset + request.size]
        return FetchResult(page, has_more=len(ordered) > request.offset + request.size)


def test_a_duck_typed_fetcher_serves_with_the_base_class_defaults():
    from datapipe_django.fetchers import BaseFetcher, Fetcher

    source = Rows(rows(7))
    assert not isinstance(source, BaseFetcher)
    pipeline = make(fetchers=[source], ordering=("-id",))
    seen = pipeline.fetchers[0]
    assert isinstance(seen, BaseFetcher) and isinstance(seen, Fetcher) and seen.wrapped is source
    assert seen.items is source.items  # any other attribute is the fetcher's own
    first = pipeline.execute(limit=3)
    assert [i.id for i in first.items] == [7, 6, 5] and first.has_more
    assert first.sources == ("rows",)
    second = pipeline.execute(limit=3, cursor=first.next_cursor)
    assert [i.id for i in second.items] == [4, 3, 2]
    request = source.asked[0]
    assert (seen.priority, seen.database, seen.mirror_of, seen.complete, seen.fetcher) == (
        None, None, None, False, None)
    assert seen.get_holds() is None and seen.declares_scope()  # nothing known: no W014
    assert seen.count(request) is None and seen.runs_inline(request) is False
    assert seen.can_rank(request) is False and seen.can_facet(request) is False
    assert seen.check(pipeline) == [] and seen.explain(request) == {} and seen.health() is None
    assert pipeline.execute(limit=3, total=True).total is None  # no count(): no exact total


def test_a_duck_typed_fetcher_keeps_the_hooks_it_has_and_can_be_cached():
    from datapipe_django.fetchers import CachedFetcher

    class Counting(Rows):
        priority = -1

        def count(self, request):
            return len(self.items)

    source = Counting(rows(4))
    pipeline = make(fetchers=[InMemoryFetcher(rows(2), name="memory"), source])
    assert [f.name for f in pipeline.fetchers] == ["rows", "memory"]  # its own priority
    assert make("p-count", fetchers=[source]).execute(limit=2, total=True).total == 4  # count()
    request = source.asked[0]
    cached = CachedFetcher(Rows(rows(3)), name="cached")
    # What a cache asks of the fetcher it wraps exists on a minimal one (no AttributeError).
    assert cached.can_rank(request) is False and cached.can_facet(request) is False
    assert cached.count(request) is None and cached.get_holds() is None
    assert cached.runs_inline(request) is False and cached.database is None
    served = make("p-cached", fetchers=[cached]).execute(limit=2)
    assert [i.id for i in served.items] == [1, 2] and served.sources == ("cached",)


@pytest.mark.parametrize("base", ["fetchers", "enrichers"])
def test_each_base_class_documents_every_hook_it_declares(base):
    import inspect

    from datapipe_django.enrichers import BaseEnricher, Enricher
    from datapipe_django.fetchers import BaseFetcher, Fetcher

    cls, protocol = {"fetchers": (BaseFetcher, Fetcher),
                     "enrichers": (BaseEnricher, Enricher)}[base]
    hooks = [name for name, member in vars(cls).items()
             if not name.startswith("_") and (callable(member) or isinstance(member, property))]
    assert len(hooks) >= 8, hooks
    undocumented = [name for name in hooks if not inspect.getdoc(getattr(cls, name))]
    assert not undocumented, f"{cls.__name__} declares {undocumented} without a docstring"
    # The protocol is the required part of the base class: every member it names is there.
    required = set(protocol.__annotations__) | {
        name for name in vars(protocol) if not name.startswith("_")}
    assert required == ({"name", "priority", "can_handle", "fetch"} if base == "fetchers"
                        else {"name", "required", "can_enrich", "enrich"})
    assert all(hasattr(cls, name) for name in required)
