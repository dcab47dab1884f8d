"""System checks (``django.core.checks.run_checks``) over the registered pipelines and the
``DATAPIPE`` setting."""

from __future__ import annotations

import types

import django_filters
import pytest
from django.core.checks import run_checks
from django.test import override_settings

from datapipe_django import Pipeline, registry
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.specs import Eq
from datapipe_django.test import InMemoryFetcher
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item, Owner


@pytest.fixture
def only(monkeypatch):
    """Make the registry hold just the pipelines given."""

    def use(*pipelines: Pipeline) -> None:
        monkeypatch.setattr(registry, "_pipelines", {p.name: p for p in pipelines})

    return use


def pipeline(name="chk", *fetchers, **kwargs) -> Pipeline:
    kwargs.setdefault("tenant_field", "tenant")
    return Pipeline(name, model=Item, fetchers=list(fetchers or [ORMFetcher("default")]),
                    ordering=("-created_at", "-id"), register=False, **kwargs)


def found(*ids: str):
    """The datapipe messages of ``run_checks``, as (id, msg, hint), for ``ids`` only."""
    return [(m.id, m.msg, m.hint) for m in run_checks(tags=["datapipe_django"])
            if m.id in ids]


class CompilableItemFilterSet(ItemFilterSet):
    """ItemFilterSet with a spec for its ``method=`` filter ``opaque``."""

    def spec_opaque(self, name, value):
        return Eq("name", value)


def test_a_correct_declaration_has_no_message(only):
    only(pipeline(filterset_class=CompilableItemFilterSet, tenant_field="owner__name",
                  ordering_fields=("created_at", "amount"), search_fields=("name", "owner__name")))
    assert run_checks(tags=["datapipe_django"]) == []


# -- declaration mistakes that surfaced later as a client's 400 or a 500 (issue 10) ----------

def test_e015_a_method_filter_without_a_spec(only):
    only(pipeline(filterset_class=ItemFilterSet))
    [(_, msg, hint)] = found("datapipe_django.E015")
    assert msg == ("Pipeline 'chk': filter 'opaque' of ItemFilterSet uses method="
                   "'filter_opaque' and has no spec, so no source can serve a request that uses "
                   "it (each such request is a 400).")
    assert hint.startswith("Define spec_opaque(self, name, value) on ItemFilterSet")


def test_e016_a_search_field_that_is_not_a_field(only):
    only(pipeline(search_fields=("name", "nmae", "owner__nick")))
    messages = found("datapipe_django.E016")
    assert [m for m, _ in [(msg, hint) for _, msg, hint in messages]] == [
        "Pipeline 'chk': search_fields entry 'nmae' is not a field of testapp.Item: "
        "testapp.Item has no field 'nmae' (did you mean 'name'?).",
        "Pipeline 'chk': search_fields entry 'owner__nick' is not a field of testapp.Item: "
        "testapp.Owner has no field 'nick'.",
    ]


def test_a_fetcher_or_enricher_class_instead_of_an_instance_is_refused_by_the_constructor():
    from django.core.exceptions import ImproperlyConfigured

    from datapipe_django.enrichers import PrefetchEnricher

    with pytest.raises(ImproperlyConfigured, match=r"Pipeline 'chk': `fetchers` holds the class "
                                                   r"ORMFetcher, not an instance\. Pass a "
                                                   r"fetcher object, e\.g\. ORMFetcher\("):
        pipeline("chk", ORMFetcher)
    with pytest.raises(ImproperlyConfigured, match=r"`enrichers` holds the class "
                                                   r"PrefetchEnricher, not an instance"):
        pipeline(enrichers=[PrefetchEnricher])


def test_w017_an_enricher_that_no_expandable_field_renders(only):
    from django.urls import include, path
    from rest_framework.routers import SimpleRouter

    from datapipe_django.rest import PipelineViewSet
    from datapipe_django.rest.checks import unrendered_expansions
    from tests.testapp.pipelines import RelatedEnricher
    from tests.testapp.serializers import ItemSerializer

    chk = pipeline(enrichers=[RelatedEnricher("owner"), RelatedEnricher("tags")])

    class TagsViewSet(PipelineViewSet):
        pipeline = chk
        serializer_class = ItemSerializer

        def get_tenant(self):
            return "t1"

    assert unrendered_expansions(chk, ItemSerializer) == ["tags"]
    router = SimpleRouter(trailing_slash=False)
    router.register("tags-items", TagsViewSet, basename="tags-items")
    urlconf = types.ModuleType("w017_urls")
    urlconf.urlpatterns = [path("v1/", include(router.urls))]
    only(chk)
    with override_settings(ROOT_URLCONF=urlconf):
        [(_, msg, hint)] = found("datapipe_django.W017")
    assert "pipeline 'chk' has an enricher for 'tags', but ItemSerializer renders no " \
           "ExpandableField at 'tags'" in msg
    assert hint.startswith("Declare tags = ExpandableField(<Serializer>)")


def test_e001_unknown_database_alias(only):
    only(pipeline("chk", ORMFetcher("nope", name="archive")))
    [(_, msg, hint)] = found("datapipe_django.E001")
    assert msg == ("Pipeline 'chk': fetcher 'archive' uses database alias 'nope', which is not "
                   "in settings.DATABASES.")
    assert "Add the alias to DATABASES" in hint


def test_e002_filterset_of_another_model(only):
    class OwnerFilterSet(django_filters.FilterSet):
        class Meta:
            model = Owner
            fields = ["name"]

    only(pipeline(filterset_class=OwnerFilterSet))
    [(_, msg, hint)] = found("datapipe_django.E002")
    assert msg == ("Pipeline 'chk': filterset_class OwnerFilterSet filters testapp.Owner, not "
                   "the pipeline's model testapp.Item.")
    assert "Meta.model" in hint


@pytest.mark.parametrize(("tenant_field", "why"), [
    ("owner__nmae", "testapp.Owner has no field 'nmae' (did you mean 'name'?)"),
    ("name__owner", "testapp.Item.name is not a relation"),
])
def test_e007_tenant_field_path_unknown(only, tenant_field, why):
    # The constructor checks the first part of the path; the check follows all of it.
    only(pipeline(tenant_field=tenant_field))
    [(_, msg, hint)] = found("datapipe_django.E007")
    assert msg == (f"Pipeline 'chk': tenant_field {tenant_field!r} is not a field of "
                   f"testapp.Item: {why}.")
    assert "tenant_field='merchant_id'" in hint


def test_e007_tenant_field_changed_after_construction(only):
    p = pipeline()
    p.tenant_field = "merchant"
    only(p)
    [(_, msg, _)] = found("datapipe_django.E007")
    assert "testapp.Item has no field 'merchant'" in msg


def test_e008_ordering_fields_unknown(only):
    p = pipeline()
    p.ordering_fields = p.ordering_fields | {"amout", "owner__name"}
    only(p)
    messages = found("datapipe_django.E008")
    assert [m[1] for m in messages] == [
        "Pipeline 'chk': ordering field 'amout' is not a field of testapp.Item.",
        "Pipeline 'chk': ordering field 'owner__name' is not a field of testapp.Item."]
    assert "concrete fields" in messages[0][2]


def test_e009_search_document_of_another_model(only):
    from django_elasticsearch_dsl import Document

    from datapipe_django.fetchers import CachedFetcher, SearchFetcher
    from tests.search_documents import ItemDocument

    class OwnerDocument(Document):  # not registered: nothing indexes it
        class Index:
            name = "dp-unused-owners"

        class Django:
            model = Owner
            fields = ["name"]

    only(pipeline("chk", SearchFetcher(OwnerDocument, name="search"),
                  CachedFetcher(SearchFetcher(OwnerDocument, name="inner"), name="cached"),
                  ORMFetcher("default")))
    messages = found("datapipe_django.E009")
    assert [m[1] for m in messages] == [
        "Pipeline 'chk': fetcher 'search' searches OwnerDocument, which indexes testapp.Owner, "
        "not the pipeline's model testapp.Item.",
        # a wrapper's check(pipeline) runs the wrapped fetcher's
        "Pipeline 'chk': fetcher 'inner' searches OwnerDocument, which indexes testapp.Owner, "
        "not the pipeline's model testapp.Item.",
    ]
    assert messages[0][2] == "Give the fetcher a Document whose Django.model is testapp.Item."
    only(pipeline("chk", SearchFetcher(ItemDocument, name="items")))
    assert found("datapipe_django.E009") == []


def test_e010_duplicate_fetcher_names(only):
    p = pipeline("chk", InMemoryFetcher(name="a"))
    p.fetchers.append(InMemoryFetcher(name="a"))
    only(p)
    [(_, msg, hint)] = found("datapipe_django.E010")
    assert msg.startswith("Pipeline 'chk': two fetchers are named 'a'")
    assert hint == "Pass name='...' to one of them."


def test_e011_and_w001_the_datapipe_setting(only):
    only()
    with override_settings(DATAPIPE={"PRIMARY": "default", "REPLICAS": ["replica9"],
                                     "TIMEOUTS": 2, "ARCHIVES": []}):
        [(_, msg, hint)] = found("datapipe_django.E011")
        assert msg == ("settings.DATAPIPE['REPLICAS'] names the database alias 'replica9', "
                       "which is not in settings.DATABASES.")
        [(_, msg, hint)] = found("datapipe_django.W001")
        assert msg == "settings.DATAPIPE has an unknown key 'TIMEOUTS'; it is ignored."
        assert hint == "Did you mean 'TIMEOUT'?"


def test_manage_py_check_runs_them(only):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    only(pipeline("chk", ORMFetcher("nope")))
    with pytest.raises(SystemCheckError, match=r"datapipe_django\.E001"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_w014_a_sequential_source_before_another_that_declares_nothing():
    from django.core import checks as django_checks

    from datapipe_django import FallbackMode, Pipeline
    from datapipe_django.specs import Range
    from datapipe_django.test import InMemoryFetcher, unregister_pipeline
    from tests.testapp.models import Item

    def messages():
        return [m for m in django_checks.run_checks() if m.id == "datapipe_django.W014"
                and m.obj.name == "w014"]

    try:
        Pipeline("w014", model=Item, fallback=FallbackMode.SEQUENTIAL,
                 fetchers=[InMemoryFetcher(name="recent"), InMemoryFetcher(name="archive")])
        (warning,) = messages()
        assert "'recent' declares neither `holds` nor `can_handle`" in warning.msg
        assert "'archive' comes after it" in warning.msg and "?ordering=-amount" in warning.msg
        assert "holds=Range('created_at', gte=...)" in warning.hint
        unregister_pipeline("w014")
        # Declared (holds, can_handle), a mirror after it, PARALLEL, or one source: no warning.
        for fetchers, mode in (
            ([InMemoryFetcher(name="recent", holds=Range("created_at", gte=1)),
              InMemoryFetcher(name="archive")], FallbackMode.FIRST_SUCCESS),
            ([InMemoryFetcher(name="recent", can_handle=lambda r: True),
              InMemoryFetcher(name="archive")], FallbackMode.SEQUENTIAL),
            ([InMemoryFetcher(name="appdb"), InMemoryFetcher(name="replica", mirror_of="appdb")],
             FallbackMode.SEQUENTIAL),
            ([InMemoryFetcher(name="a"), InMemoryFetcher(name="b")], FallbackMode.PARALLEL),
        ):
            Pipeline("w014", model=Item, fallback=mode, fetchers=fetchers)
            assert messages() == [], fetchers
            unregister_pipeline("w014")
    finally:
        unregister_pipeline("w014")
