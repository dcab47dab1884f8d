"""Search Documents of the test suite, and helpers to run tests against the real engines.

``ItemDocument`` (django-elasticsearch-dsl, on the Elasticsearch node) and
``ItemOpenSearchDocument`` (django-opensearch-dsl, on the OpenSearch node) index
:class:`tests.testapp.models.Item` the way docs/search.md recommends: every filterable string
as a ``keyword`` (``name`` as analyzed text with a ``raw`` keyword sub-field), a ``folded``
keyword sub-field (lowercase normalizer) for case-insensitive lookups, datetimes as
``date_nanos``, the pk as a field to sort by, the owner as an object holding its id and name.

Index names carry a per-run prefix (``DATAPIPE_TEST_INDEX_PREFIX``, else a random one), so
runs sharing the nodes never touch each other's indices.

Outside CI, when the OpenSearch node is not running, ``ItemOpenSearchDocument`` is not
registered (the index sync and the rebuild command do not see it) and the tests that use it
skip (``require_opensearch``); the Elasticsearch tests run as usual.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import require_search
from tests.services import AVAILABLE, IN_CI
from tests.testapp.models import Item, Owner

pytest.importorskip("django_elasticsearch_dsl")

from django_elasticsearch_dsl import Document, fields
from django_elasticsearch_dsl.registries import registry
from django_opensearch_dsl import Document as OpenSearchDocument
from django_opensearch_dsl import fields as os_fields
from django_opensearch_dsl.registries import registry as os_registry
from elasticsearch.dsl import normalizer
from opensearchpy import normalizer as os_normalizer

from datapipe_django.search.documents import adapter_for
from datapipe_django.search.fields import DateNanosField, OpenSearchDateNanosField
from datapipe_django.search.sync import reset_cooldowns, write_documents

PREFIX = os.environ.get("DATAPIPE_TEST_INDEX_PREFIX") or f"datapipe-test-{uuid.uuid4().hex[:8]}"
INDEX_SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0}

#: The search engine is running (or we are in CI, where it must be).
HAS_SEARCH = "search" in AVAILABLE or IN_CI
#: The OpenSearch node is running (or we are in CI, where it must be).
HAS_OPENSEARCH = "opensearch" in AVAILABLE or IN_CI


#: Case-insensitive lookups use keyword sub-fields with this normalizer.
FOLD = normalizer("datapipe_fold", filter=["lowercase"])
OS_FOLD = os_normalizer("datapipe_fold", filter=["lowercase"])


@registry.register_document
class ItemDocument(Document):
    tenant = fields.KeywordField()
    name = fields.TextField(fields={"raw": fields.KeywordField(),
                                    "folded": fields.KeywordField(normalizer=FOLD)})
    status = fields.KeywordField()
    created_at = DateNanosField()
    category = fields.LongField(attr="category_id")
    owner = fields.ObjectField(properties={
        "id": fields.LongField(),
        "name": fields.KeywordField(fields={"folded": fields.KeywordField(normalizer=FOLD)}),
    })

    class Index:
        name = f"{PREFIX}-items"
        settings = INDEX_SETTINGS

    class Django:
        model = Item
        fields = ["id", "amount", "active", "day", "score"]
        related_models = [Owner]  # an owner's name is part of its items' documents

    def get_queryset(self) -> Any:
        return super().get_queryset().select_related("owner")

    def get_instances_from_related(self, related: Any) -> Any:
        if isinstance(related, Owner):
            return related.items.all()
        return None


class ItemOpenSearchDocument(OpenSearchDocument):
    tenant = os_fields.KeywordField()
    name = os_fields.TextField(fields={"raw": os_fields.KeywordField(),
                                       "folded": os_fields.KeywordField(normalizer=OS_FOLD)})
    status = os_fields.KeywordField()
    created_at = OpenSearchDateNanosField()
    category = os_fields.LongField(attr="category_id")
    owner = os_fields.ObjectField(properties={
        "id": os_fields.LongField(),
        "name": os_fields.KeywordField(fields={
            "folded": os_fields.KeywordField(normalizer=OS_FOLD)}),
    })

    class Index:
        name = f"{PREFIX}-os-items"
        settings = INDEX_SETTINGS

    class Django:
        model = Item
        fields = ["id", "amount", "active", "day", "score"]


if HAS_OPENSEARCH:
    os_registry.register_document(ItemOpenSearchDocument)

#: The Documents whose engine is here: their indices are created and dropped for every run.
DOCUMENTS: tuple[type[Any], ...] = (
    (ItemDocument, ItemOpenSearchDocument) if HAS_OPENSEARCH else (ItemDocument,))


def recreate(*documents: type[Any]) -> None:
    """Empty indices for ``documents`` (deleted, aliases included, and created again)."""
    for document in documents or DOCUMENTS:
        adapter = adapter_for(document)
        for index in adapter.aliased_indices(adapter.index) or [adapter.index]:
            adapter.delete_index(index)
        adapter.create_index(adapter.index)


def drop_all() -> None:
    for document in DOCUMENTS:
        adapter = adapter_for(document)
        for index in [*adapter.aliased_indices(adapter.index), adapter.index]:
            adapter.delete_index(index)
        client = adapter.client()
        leftovers = client.indices.get(index=f"{adapter.index}-*", ignore_unavailable=True)
        for index in dict(leftovers):
            adapter.delete_index(index)


def index_rows(rows: Iterable[Item], *, using: str, document: type[Any] = ItemDocument) -> None:
    """Write ``rows`` (already saved on ``using``) to the index now, and make them visible."""
    report = write_documents(adapter_for(document), [row.pk for row in rows], using=using,
                             refresh=True)
    assert not report.failed, report.failed


def indexed_source(pk: Any, document: type[Any] = ItemDocument) -> dict[str, Any] | None:
    """The stored document of ``pk`` (None when there is none)."""
    adapter = adapter_for(document)
    client = adapter.client()
    if adapter.flavor == "elasticsearch":
        response = client.options(ignore_status=404).get(index=adapter.index, id=str(pk))
    else:
        response = client.get(index=adapter.index, id=str(pk), ignore=404)
    body = dict(getattr(response, "body", response))
    return body.get("_source") if body.get("found") else None


def index_objects(objs: Iterable[Item], document: type[Any] = ItemDocument) -> None:
    """Index (unsaved) instances directly; their relations must be attached, not queried."""
    adapter = adapter_for(document)
    response = adapter.bulk(adapter.actions(objs), refresh=True)
    assert not response["errors"], response


# Fixtures: import the ``*_fixture`` functions into a test module to use them by name.

@pytest.fixture(scope="session", name="search_indices")
def search_indices_fixture() -> Iterator[None]:
    """The test indices, created once per run and deleted at the end."""
    require_search()
    recreate()
    yield
    drop_all()


@pytest.fixture(name="empty_indices")
def empty_indices_fixture(search_indices: None) -> None:
    """Fresh, empty test indices for this test."""
    reset_cooldowns()
    recreate()


@contextmanager
def autosync() -> Iterator[None]:
    """The on-commit index sync switched on for Elasticsearch Documents."""
    from django.test import override_settings

    reset_cooldowns()
    with override_settings(ELASTICSEARCH_DSL_AUTOSYNC=True):
        yield
