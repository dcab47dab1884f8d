"""``datapipe_django.fetchers.base``: what a fetcher is asked (``FetchRequest``), what it answers
(``FetchResult``, ``Verdict``), the defaults of every hook on ``BaseFetcher``, and a duck-typed
fetcher seen through ``as_fetcher``. (What every real fetcher promises on its store:
tests/test_fetcher_contract.py.)"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.fetchers import FetchRequest, FetchResult
from datapipe_django.fetchers.base import (
    REQUIRED_MEMBERS,
    BaseFetcher,
    Fetcher,
    Verdict,
    as_fetcher,
    missing_member,
)
from datapipe_django.paging import Ordering
from datapipe_django.specs import And, Eq, MatchAll
from tests.testapp.models import Item


def ask(**kwargs: Any) -> FetchRequest:
    kwargs.setdefault("spec", MatchAll())
    return FetchRequest(request=PipelineRequest(tenant="t1", auth_type="private"), model=Item,
                        ordering=Ordering.for_model(Item, ["-created_at"]), size=10,
                        **kwargs)


class Minimal:
    """The required protocol only: name, can_handle, fetch."""

    name = "minimal"

    def can_handle(self, request: FetchRequest) -> bool:
        return True

    def fetch(self, request: FetchRequest) -> FetchResult:
        return FetchResult([Item(id=1)])


class TestFetchRequest:
    def test_full_spec_folds_the_tenant_in(self) -> None:
        spec = Eq("status", "queued")
        assert ask(spec=spec).full_spec == spec
        assert ask(spec=spec, tenant_field="tenant", tenant="t9").full_spec == And(
            Eq("tenant", "t9"), spec)
        assert ask(spec=None, uncompilable="opaque", tenant_field="tenant").full_spec is None

    def test_remaining_counts_down_and_never_below_zero(self) -> None:
        assert ask().remaining is None
        assert 4 < ask(deadline=time.monotonic() + 5).remaining <= 5
        assert ask(deadline=time.monotonic() - 1).remaining == 0.0

    def test_a_relevance_or_facets_request_is_served_by_one_source(self) -> None:
        assert not ask().single_source
        assert ask(facets=("status",)).single_source
        relevance = replace(ask(search="x"), ordering=Ordering.by_relevance(Item))
        assert relevance.relevance and relevance.single_source

    def test_the_pipeline_request_shows_through(self) -> None:
        request = ask()
        assert request.auth_type == "private"
        assert request.filters == {}


class TestBaseFetcher:
    def test_fetch_is_required_and_says_so(self) -> None:
        class Nameless(BaseFetcher):
            pass

        with pytest.raises(NotImplementedError, match=r"Nameless must implement fetch"):
            Nameless(name="n").fetch(ask())

    def test_can_handle_declines_with_its_reason(self) -> None:
        fetcher = BaseFetcher(name="b")
        assert fetcher.can_handle(ask()) == Verdict(True)
        verdict = fetcher.can_handle(ask(spec=None, uncompilable="opaque"))
        assert not verdict and verdict.reason == "filter 'opaque' cannot be compiled"
        relevance = replace(ask(search="x"), ordering=Ordering.by_relevance(Item))
        assert fetcher.can_handle(relevance).reason == "cannot rank by relevance"
        assert fetcher.can_handle(ask(facets=("status",))).reason == "cannot count facets"

    def test_a_predicate_narrows_what_it_serves_and_is_named_when_it_declines(self) -> None:
        def recent_only(request: FetchRequest) -> bool:
            return request.offset < 100

        fetcher = BaseFetcher(name="b", can_handle=recent_only)
        assert fetcher.can_handle(ask(offset=5))
        assert fetcher.can_handle(ask(offset=500)).reason == "declined by recent_only"
        assert fetcher.declares_scope()
        assert not BaseFetcher(name="c").declares_scope()

    def test_every_optional_hook_has_a_safe_default(self) -> None:
        fetcher = BaseFetcher(name="b")
        request = ask()
        assert fetcher.get_holds() is None
        assert (fetcher.database, fetcher.mirror_of, fetcher.complete) == (None, None, False)
        assert fetcher.count(request) is None
        assert not fetcher.runs_inline(request)
        assert not fetcher.can_rank(request) and not fetcher.can_facet(request)
        assert fetcher.explain(request) == {} and fetcher.health() is None
        pipeline = Pipeline("base-hooks", model=Item, fetchers=[Minimal()], register=False)
        assert fetcher.check(pipeline) == []
        assert fetcher.contribute_to_pipeline(pipeline) is None
        assert repr(fetcher) == "<BaseFetcher 'b'>"

    def test_name_priority_and_mirror_of_are_kept(self) -> None:
        fetcher = BaseFetcher(name="b", priority=3, mirror_of="primary")
        assert (fetcher.name, fetcher.priority, fetcher.mirror_of) == ("b", 3, "primary")


class TestAsFetcher:
    def test_a_base_fetcher_is_itself(self) -> None:
        fetcher = BaseFetcher(name="b")
        assert as_fetcher(fetcher) is fetcher

    def test_a_duck_typed_fetcher_gets_every_default_and_keeps_its_own_hooks(self) -> None:
        class Counting(Minimal):
            priority = 2
            database = "archive"

            def count(self, request: FetchRequest) -> int:
                return 42

        duck = Counting()
        assert isinstance(duck, Fetcher) and not isinstance(duck, BaseFetcher)
        seen = as_fetcher(duck)
        assert isinstance(seen, BaseFetcher) and seen.wrapped is duck
        assert (seen.name, seen.priority, seen.database) == ("minimal", 2, "archive")
        assert seen.count(ask()) == 42
        assert seen.get_holds() is None and seen.explain(ask()) == {}
        assert seen.declares_scope()  # nothing is known of what it serves: no warning
        assert [r.pk for r in seen.fetch(ask()).items] == [1]
        assert repr(seen) == repr(duck)

    def test_a_pipeline_runs_a_duck_typed_fetcher(self) -> None:
        result = Pipeline("duck", model=Item, fetchers=[Minimal()], register=False).execute(
            PipelineRequest())
        assert [r.pk for r in result.items] == [1]
        assert result.source == "minimal"


def test_missing_member_names_the_first_required_member_an_object_lacks():
    class Complete:
        name = "x"

        def can_handle(self, request):
            return True

        def fetch(self, request):
            return FetchResult(items=[])

    assert missing_member(Complete()) is None
    for member in REQUIRED_MEMBERS:
        lacking = type("Lacking", (), {m: getattr(Complete, m) for m in REQUIRED_MEMBERS
                                       if m != member})
        assert missing_member(lacking()) == member
