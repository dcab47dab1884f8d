"""Data, helpers and Hypothesis strategies shared by the tests of :mod:`datapipe_django.specs`
(and by the tests that check a compilation on a real engine or over every fetcher): rows with
ties, NULLs, unicode and dangling keys, and random FilterSet parameters over them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from django.conf import settings
from django.utils.datastructures import MultiValueDict
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datapipe_django.specs import (
    Spec,
)
from tests.services import IN_CI, START_HINT
from tests.testapp.models import Category, Item, Owner

UTC = dt.UTC
PLUS5 = dt.timezone(dt.timedelta(hours=5))
MINUS330 = dt.timezone(-dt.timedelta(hours=3, minutes=30))

# --------------------------------------------------------------------------------------------
# Real PostgreSQL: skip outside CI when it is not running, fail in CI.
# --------------------------------------------------------------------------------------------

HAS_POSTGRES = "primary" in settings.DATABASES
requires_postgres = pytest.mark.skipif(  # never skips in CI: a missing server fails there
    not HAS_POSTGRES and not IN_CI, reason=f"PostgreSQL not running: {START_HINT}"
)
ALIASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("primary", id="postgres", marks=[requires_postgres, pytest.mark.postgres]),
]

# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

CATEGORIES = {1: "Books", 2: "bücher", 3: "ÄRGER"}
OWNERS = {1: "Ärger", 2: "bob", 3: "BOB ß"}
DANGLING = 99  # a foreign key value with no row (the FKs have db_constraint=False)


def make_world(*aliases: str) -> None:
    """Categories and owners, with the same ids, on every alias (forms validate on default)."""
    for alias in {"default", *aliases}:
        Category.objects.using(alias).bulk_create(
            [Category(id=pk, name=name) for pk, name in CATEGORIES.items()]
        )
        Owner.objects.using(alias).bulk_create(
            [Owner(id=pk, name=name) for pk, name in OWNERS.items()]
        )


def item(pk: int, **kwargs: Any) -> Item:
    values: dict[str, Any] = {
        "tenant": "t1",
        "name": f"item {pk}",
        "status": Item.Status.QUEUED,
        "amount": 0,
        "active": True,
        "created_at": dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
        "day": dt.date(2024, 1, 1),
        "score": None,
        "category_id": None,
        "owner_id": None,
    }
    values.update(kwargs)
    return Item(id=pk, **values)


def store(alias: str, items: Iterable[Item]) -> list[Item]:
    Item.objects.using(alias).all().delete()
    return Item.objects.using(alias).bulk_create(list(items))


def db_pks(alias: str, spec: Spec) -> set[int]:
    return set(Item.objects.using(alias).filter(spec.to_q()).values_list("pk", flat=True))


def memory_pks(alias: str, spec: Spec, items: Iterable[Item] | None = None) -> set[int]:
    if items is None:
        items = Item.objects.using(alias).select_related("category", "owner")
    return {obj.pk for obj in items if spec.matches(obj)}


def assert_selects(alias: str, spec: Spec, expected: set[int]) -> None:
    """The database (``to_q``) and memory (``matches``) both select exactly ``expected``."""
    assert db_pks(alias, spec) == expected, f"to_q() of {spec!r}"
    assert memory_pks(alias, spec) == expected, f"matches() of {spec!r}"


def as_query(params: Mapping[str, Any]) -> MultiValueDict:
    data: MultiValueDict = MultiValueDict()
    for key, value in params.items():
        data.setlist(key, list(value) if isinstance(value, list) else [value])
    return data


# --------------------------------------------------------------------------------------------
# Property: to_q() == matches() == FilterSet.qs, on any data and any parameters
# --------------------------------------------------------------------------------------------

NAME_ALPHABET = "aAbBäÄßéÉıI _%\\"
STATUSES = [s.value for s in Item.Status]
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
TZS = st.sampled_from([UTC, PLUS5, MINUS330])
names = st.text(NAME_ALPHABET, max_size=6)
# Function-scoped fixtures (the database) are shared by every example on purpose: each
# example replaces all Item rows itself, so no state leaks from one example to the next.
PROPERTY_SETTINGS = hsettings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def items_strategy(draw: st.DrawFn) -> list[Item]:
    rows = []
    count = draw(st.integers(0, 12) if draw(st.integers(0, 9)) == 0 else st.integers(4, 12))
    for pk in range(1, count + 1):
        rows.append(
            item(
                pk,
                tenant=draw(st.sampled_from(["t1", "t2"])),
                name=draw(names),
                status=draw(st.sampled_from(STATUSES)),
                amount=draw(st.integers(-4, 4)),
                active=draw(st.booleans()),
                created_at=draw(
                    st.datetimes(
                        min_value=dt.datetime(2024, 1, 1),
                        max_value=dt.datetime(2024, 1, 4),
                        timezones=TZS,
                    )
                ),
                day=draw(st.dates(dt.date(2024, 1, 1), dt.date(2024, 1, 5))),
                score=draw(st.none() | st.integers(-2, 2)),
                category_id=draw(st.sampled_from([None, 1, 2, 3, DANGLING])),
                owner_id=draw(st.sampled_from([None, 1, 2, 3, DANGLING])),
            )
        )
    return rows


def _flip_case(draw: st.DrawFn, text: str) -> str:
    return "".join(c.swapcase() if draw(st.booleans()) else c for c in text)


@st.composite
def text_value(draw: st.DrawFn, known: list[str]) -> str:
    if known and draw(st.booleans()):
        source = draw(st.sampled_from(known))
        start = draw(st.integers(0, len(source)))
        end = draw(st.integers(start, len(source)))
        return _flip_case(draw, source[start:end]) if draw(st.booleans()) else source[start:end]
    return draw(names)


NUMBERS = st.one_of(
    st.integers(-5, 5).map(str),
    st.sampled_from(["1.5", "-2.5", "0.0", "3e0", "1e30", "-1e30", "abc"]),
)
SMALL_NUMBERS = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(["1.5", "-2.5", "x"]))


def iso_datetime(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(dt.datetime(2023, 12, 31), dt.datetime(2024, 1, 5), timezones=TZS))
    return moment.isoformat() if draw(st.integers(0, 20)) else "not-a-date"


def plain_datetime(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(dt.datetime(2023, 12, 31), dt.datetime(2024, 1, 5)))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def a_date(draw: st.DrawFn) -> str:
    day = draw(st.dates(dt.date(2023, 12, 31), dt.date(2024, 1, 6)))
    return day.isoformat() if draw(st.integers(0, 20)) else "2024-02-30"


@st.composite
def params_strategy(draw: st.DrawFn, rows: list[Item], *, text: bool, huge: bool) -> dict:
    """Random query parameters for ItemFilterSet (some invalid), given the rows."""
    row_names = [r.name for r in rows]
    owner_names = list(OWNERS.values())
    numbers = NUMBERS if huge else SMALL_NUMBERS
    choices = st.sampled_from([*STATUSES, "bogus"] if draw(st.integers(0, 9)) == 0 else STATUSES)
    category = st.sampled_from(["1", "2", "3", "null"] + (["x"] if draw(st.booleans()) else []))
    generators: dict[str, Any] = {
        "status": lambda: draw(choices),
        "status_not": lambda: draw(choices),
        "status__in": lambda: draw(st.lists(choices, max_size=3)),
        "status__all": lambda: draw(st.lists(choices, max_size=2)),
        "status__csv": lambda: ",".join(draw(st.lists(choices, min_size=1, max_size=3))),
        "name": lambda: draw(text_value(row_names)),
        "owner_name": lambda: draw(st.sampled_from([*owner_names, "bob ", ""])),
        "amount": lambda: draw(numbers),
        "amount__gt": lambda: draw(numbers),
        "amount__gte": lambda: draw(numbers),
        "amount__lt": lambda: draw(numbers),
        "amount__lte": lambda: draw(numbers),
        "amount_range_min": lambda: draw(numbers),
        "amount_range_max": lambda: draw(numbers),
        "amount__in": lambda: ",".join(draw(st.lists(numbers, min_size=1, max_size=3))),
        "amount__range": lambda: ",".join(draw(st.lists(numbers, min_size=1, max_size=2))),
        "amount_lookup": lambda: draw(numbers),
        "amount_lookup_lookup": lambda: draw(st.sampled_from(["exact", "gt", "lt"])),
        "active": lambda: draw(st.sampled_from(["true", "false", ""])),
        "created_at_after": lambda: iso_datetime(draw),
        "created_at_before": lambda: iso_datetime(draw),
        "created_after": lambda: iso_datetime(draw),
        "created_before": lambda: plain_datetime(draw),
        "day_after": lambda: a_date(draw),
        "day_before": lambda: a_date(draw),
        "on_day": lambda: a_date(draw),
        "score": lambda: draw(numbers),
        "score__isnull": lambda: draw(st.sampled_from(["true", "false", ""])),
        "score_not": lambda: draw(numbers),
        "category": lambda: draw(category),
        "categories": lambda: draw(st.lists(category, max_size=3)),
    }
    if text:
        generators.update(
            {
                "name__iexact": lambda: draw(text_value(row_names)),
                "name__contains": lambda: draw(text_value(row_names)),
                "name__icontains": lambda: draw(text_value(row_names)),
                "name__startswith": lambda: draw(text_value(row_names)),
                "name__istartswith": lambda: draw(text_value(row_names)),
                "custom": lambda: draw(text_value(row_names + owner_names)),
            }
        )
    keys = draw(st.lists(st.sampled_from(sorted(generators)), min_size=1, max_size=3, unique=True))
    return {key: generators[key]() for key in keys}
