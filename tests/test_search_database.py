"""The database's answer to ``q``: ``ORMFetcher(search="fulltext")`` is PostgreSQL full-text
search (whole words, like the engine) on a PostgreSQL alias, ``icontains`` elsewhere."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.fetchers import ORMFetcher
from tests.conftest import require_alias
from tests.testapp.models import Item, Owner

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NAMES = {1: "Invoice 42 paid", 2: "invoices for March", 3: "reinvoice", 4: "INVOICE-7 late",
         5: "unpaid invoice"}


def search(alias: str, q: str, *, mode: str, fields: tuple[str, ...] = ("name",)) -> list[int]:
    p = Pipeline("fulltext-test", model=Item, search_fields=fields, tenant_field="tenant",
                 ordering=("id",), fetchers=[ORMFetcher(alias, search=mode)], register=False)
    return [obj.pk for obj in p.execute(PipelineRequest(tenant="t1", search=q, limit=50)).items]


def store(alias: str) -> None:
    Owner.objects.using(alias).create(id=1, name="Paid Contractor")
    Item.objects.using(alias).bulk_create([
        Item(id=pk, tenant="t1", name=name, status="queued", amount=0, created_at=BASE,
             day=BASE.date(), owner_id=1 if pk == 3 else None)
        for pk, name in NAMES.items()
    ] + [Item(id=9, tenant="t2", name="invoice", status="queued", amount=0, created_at=BASE,
              day=BASE.date())])


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", "primary"])
def test_fulltext_matches_whole_words_on_postgresql() -> None:
    require_alias("primary")
    store("primary")
    assert search("primary", "invoice", mode="contains") == [1, 2, 3, 4, 5]
    # Words, not substrings: no "invoices" (no stemming with the simple config), no
    # "reinvoice"; "INVOICE-7" is cut into words by PostgreSQL's parser.
    assert search("primary", "invoice", mode="fulltext") == [1, 4, 5]
    assert search("primary", "PAID invoice", mode="fulltext") == [1]  # every word
    assert search("primary", "paid", mode="fulltext", fields=("name", "owner__name")) == [1, 3]
    assert search("primary", "paid contractor reinvoice", mode="fulltext",
                  fields=("name", "owner__name")) == [3]  # words may come from different fields
    assert search("primary", "& | !", mode="fulltext") == []  # operators are plain text


@pytest.mark.django_db
def test_fulltext_is_contains_on_other_databases() -> None:
    store("default")
    assert search("default", "invoice", mode="fulltext") == search(
        "default", "invoice", mode="contains") == [1, 2, 3, 4, 5]


def test_the_search_mode_is_checked() -> None:
    with pytest.raises(ImproperlyConfigured, match="'contains' or 'fulltext'"):
        ORMFetcher("default", search="regex")
