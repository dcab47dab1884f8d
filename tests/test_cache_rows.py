"""``datapipe_django.cache.rows``: what a cached page stores and how its rows are rebuilt (every
field type round-trips through JSON; rebuilt rows are what ``Model.from_db`` builds, for any
rows; the fast build only while it builds the same). No server needed."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import uuid

import pytest
from django.db import models
from django.test.utils import isolate_apps
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from datapipe_django.cache import generations
from datapipe_django.cache import rows as cache_rows
from datapipe_django.cache.rows import decode_rows, encode_rows
from tests.cache_helpers import (
    isolated_cache,  # noqa: F401  (autouse: every test here)
    make,
)
from tests.testapp.models import Item, Owner

# -- what is stored ----------------------------------------------------------------------------

class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class LevelField(models.IntegerField):
    """A custom field with a Python type of its own (generic value_to_string/to_python path)."""

    def from_db_value(self, value, expression, connection):
        return None if value is None else Level(value)

    def to_python(self, value):
        return value if value is None or isinstance(value, Level) else Level(int(value))


@isolate_apps("tests.testapp")
def test_rows_round_trip_through_json_for_every_field_type():
    class Everything(models.Model):
        big = models.BigIntegerField()
        text = models.TextField()
        flag = models.BooleanField()
        ratio = models.FloatField()
        price = models.DecimalField(max_digits=12, decimal_places=4)
        when = models.DateTimeField()
        day = models.DateField()
        clock = models.TimeField()
        span = models.DurationField()
        ident = models.UUIDField()
        doc = models.JSONField()
        blob = models.BinaryField()
        ip = models.GenericIPAddressField()
        upload = models.FileField()
        level = LevelField()
        maybe = models.IntegerField(null=True)
        owner = models.ForeignKey(Owner, null=True, on_delete=models.SET_NULL)

        class Meta:
            app_label = "testapp"

    values = dict(
        id=7, big=2**62, text="naïve ✓", flag=True, ratio=0.1, price=decimal.Decimal("12.3400"),
        when=dt.datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=dt.UTC), day=dt.date(2026, 2, 3),
        clock=dt.time(4, 5, 6, 7), span=dt.timedelta(days=2, microseconds=5),
        ident=uuid.UUID(int=12345), doc={"a": [1, None, "x"]}, blob=b"\x00\xff",
        ip="2001:db8::1", upload="files/a.txt", level=Level.HIGH, maybe=None, owner_id=4,
    )
    names = [f.attname for f in Everything._meta.concrete_fields]
    original = Everything.from_db("archive", names, [values[n] for n in names])
    fieldsets, records = encode_rows(Everything, [original], "archive")
    payload = json.loads(json.dumps({"fs": fieldsets, "r": records}))  # only JSON types
    (copy,) = decode_rows(Everything, payload["fs"], payload["r"], "archive")
    for name in names:
        got, want = getattr(copy, name), values[name]
        if name == "upload":
            got = got.name
        if name == "blob":
            got = bytes(got)
        assert got == want and type(got) is type(want), name
    assert copy._state.db == "archive" and copy._state.adding is False
    assert copy.when.tzinfo is dt.UTC


def test_deferred_fields_stay_deferred():
    partial = Item.from_db("default", ["id", "tenant", "name"], [3, "t1", "n3"])
    fieldsets, records = encode_rows(Item, [partial, make(4)], "default")
    assert len(fieldsets) == 2
    first, second = decode_rows(Item, fieldsets, records, "default")
    assert first.get_deferred_fields() == partial.get_deferred_fields()
    assert (first.pk, first.name) == (3, "n3")
    assert second.amount == 4 and not second.get_deferred_fields()
    assert second._state.db is None  # as it was (an unsaved row from memory)


def _twins(model, rows):
    """Rows rebuilt by decode_rows, and the same rows rebuilt by Model.from_db."""
    for row in rows:
        row._state.db = "default"
    fieldsets, records = encode_rows(model, rows, "default")
    decoded = decode_rows(model, fieldsets, records, "default")
    names = fieldsets[0]
    by_from_db = [model.from_db("default", names, [getattr(r, n) for n in names]) for r in rows]
    return decoded, by_from_db


def test_rebuilt_rows_are_what_from_db_builds():
    generations.watch(Item, tenant_field="tenant")  # rows remember their tenant (post_init)
    decoded, expected = _twins(Item, [make(1, owner=Owner(pk=3)), make(2)])
    assert cache_rows.fast_build(Item)  # nobody observes __init__: built without from_db
    for got, want in zip(decoded, expected, strict=True):
        assert type(got) is Item
        assert got.__dict__.keys() - {"_state"} == want.__dict__.keys() - {"_state"}
        assert {k: v for k, v in got.__dict__.items() if k != "_state"} == {
            k: v for k, v in want.__dict__.items() if k != "_state"}
        assert (got._state.db, got._state.adding) == (want._state.db, want._state.adding)
        assert got.__dict__[generations.LOADED_TENANTS] == {"tenant": "t1"}
        assert got.owner_id == want.owner_id and got.get_deferred_fields() == set()


def test_rows_go_through_from_db_when_someone_observes_init():
    from django.db.models.signals import post_init, pre_init

    seen = []

    def observer(sender, **kwargs):
        seen.append(sender)

    for signal in (post_init, pre_init):
        signal.connect(observer, sender=Item)
        try:
            assert not cache_rows.fast_build(Item)  # rows go through Item.from_db
            _twins(Item, [make(1), make(2)])
        finally:
            signal.disconnect(observer, sender=Item)
    assert seen.count(Item) >= 2 * 2  # each signal saw every rebuilt row


@isolate_apps("tests.testapp")
def test_a_model_with_its_own_from_db_gets_it_called():
    class Tracked(models.Model):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "testapp"

        @classmethod
        def from_db(cls, db, field_names, values):
            instance = super().from_db(db, field_names, values)
            instance._loaded_values = dict(zip(field_names, values, strict=True))
            return instance

    (row,) = decode_rows(Tracked, *encode_rows(Tracked, [Tracked(id=1, name="a")], "x")[:2],
                         "x")
    assert row._loaded_values == {"id": 1, "name": "a"}


def test_the_fast_build_is_on_only_while_it_builds_what_from_db_builds(monkeypatch):
    """The fast path is a feature check, not a Django version: a Django whose ``from_db`` sets
    more on the instance (here: a fetch mode on its state, as a later release might) gets its
    rows from ``from_db``, and they carry it."""
    plain_from_db = models.Model.from_db.__func__

    def from_db(cls, db, field_names, values):
        instance = plain_from_db(cls, db, field_names, values)
        instance._state.fetch_mode = "peers"
        return instance

    cache_rows._plain_model.cache_clear()
    assert cache_rows.fast_build(Item)
    monkeypatch.setattr(models.Model, "from_db", classmethod(from_db))
    cache_rows._plain_model.cache_clear()
    try:
        assert not cache_rows.fast_build(Item)
        decoded, _ = _twins(Item, [make(1), make(2)])
        assert [r._state.fetch_mode for r in decoded] == ["peers", "peers"]
    finally:
        monkeypatch.undo()
        cache_rows._plain_model.cache_clear()
    assert cache_rows.fast_build(Item)


_ITEM_NAMES = [f.attname for f in Item._meta.concrete_fields]


@st.composite
def _loaded_items(draw):
    """Item rows as the ORM loads them: random values (None where the column allows it), some
    fields deferred (``only()``), each row from a random alias."""
    names = draw(st.lists(st.sampled_from(_ITEM_NAMES), unique=True, max_size=len(_ITEM_NAMES)))
    loaded = [n for n in _ITEM_NAMES if n in names or n == "id"]
    values = {
        "id": st.integers(-(2**63), 2**63 - 1), "tenant": st.text(max_size=20),
        "name": st.text(max_size=50), "status": st.sampled_from(Item.Status.values),
        "amount": st.integers(-(2**31), 2**31 - 1), "active": st.booleans(),
        "created_at": st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(
            dt.timedelta(hours=5, minutes=30))])),
        "day": st.dates(), "score": st.none() | st.integers(0, 100),
        "category_id": st.none() | st.integers(1, 2**40), "owner_id": st.none() | st.integers(1),
    }
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        alias = draw(st.sampled_from(["default", "archive", None]))
        rows.append(Item.from_db(alias, loaded, [draw(values[n]) for n in loaded]))
    return rows


@hypothesis_settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_loaded_items(), max_size=3).map(
           lambda groups: [r for g in groups for r in g]),
       tracked=st.booleans())
def test_rebuilt_rows_are_what_from_db_builds_for_any_rows(rows, tracked):
    """The generated per-field-set decoder gives, for any rows (several field sets, deferred
    fields, None, aliases other than the entry's, tenants remembered or not), what
    ``Model.from_db`` gives for the values read back from the entry's JSON."""
    if tracked:
        generations.watch(Item, tenant_field="tenant")
    assert cache_rows.fast_build(Item)  # the generated decoder, not from_db
    fieldsets, records = encode_rows(Item, rows, "default")
    payload = json.loads(json.dumps({"fs": fieldsets, "r": records}, ensure_ascii=False))
    decoded = decode_rows(Item, payload["fs"], payload["r"], "default")
    assert len(decoded) == len(rows)
    for got, row in zip(decoded, rows, strict=True):
        names = [n for n in _ITEM_NAMES if n in row.__dict__]
        want = Item.from_db(row._state.db, names, [getattr(row, n) for n in names])
        assert type(got) is Item and next(iter(got.__dict__)) == "_state"
        assert {k: v for k, v in got.__dict__.items() if k != "_state"} == {
            k: v for k, v in want.__dict__.items() if k != "_state"}
        assert [type(getattr(got, n)) for n in names] == [type(getattr(want, n)) for n in names]
        assert (got._state.db, got._state.adding) == (want._state.db, False)
        assert got.get_deferred_fields() == want.get_deferred_fields()


def test_an_entry_naming_no_field_of_the_model_is_unreadable():
    fieldsets, records = encode_rows(Item, [make(1)], "default")
    for bad in (["id", "tenant); import os; ("], ["id", "__class__"]):
        with pytest.raises(KeyError):
            decode_rows(Item, [bad], [[0, records[0][1][:2]]], "default")
    with pytest.raises(ValueError, match="unpack"):  # fewer values than the field set names
        decode_rows(Item, fieldsets, [[0, records[0][1][:-1]]], "default")


@pytest.mark.parametrize("value", [2**63, 2**64, 2**70, -(2**63) - 1, -(2**80)])
def test_an_integer_past_64_bits_reads_back_as_that_integer(value):
    """orjson reads the entries of a model of text and integer fields, and reads an integer
    past 64 bits as a float: such an entry is read again by the standard library."""
    assert cache_rows._orjson_reads(Item) is (cache_rows.orjson is not None)
    row = make(1, amount=value, owner=Owner(pk=value))
    row._state.db = "default"
    fieldsets, records = encode_rows(Item, [row], "default")
    raw = json.dumps({"fs": fieldsets, "r": records, "db": "default"}, ensure_ascii=False)
    _, (copy,) = cache_rows.read_entry(Item, raw, lambda data: True)
    assert (copy.amount, copy.owner_id) == (value, value)
    assert type(copy.amount) is int and type(copy.owner_id) is int


@isolate_apps("tests.testapp")
def test_floats_and_json_documents_are_read_by_the_standard_library():
    class Measured(models.Model):
        ratio = models.FloatField(null=True)
        doc = models.JSONField(null=True)

        class Meta:
            app_label = "testapp"

    assert not cache_rows._orjson_reads(Measured)
    row = Measured.from_db("x", ["id", "ratio", "doc"], [1, float("nan"), {"n": 2**70}])
    fieldsets, records = encode_rows(Measured, [row], "x")
    raw = json.dumps({"fs": fieldsets, "r": records, "db": "x"}, ensure_ascii=False)
    _, (copy,) = cache_rows.read_entry(Measured, raw, lambda data: True)
    assert math.isnan(copy.ratio) and copy.doc == {"n": 2**70}


def test_an_entry_not_accepted_is_not_rebuilt():
    raw = json.dumps({"fs": [["nonsense"]], "r": [[0, [1]]], "db": "default", "g": 1})
    assert cache_rows.read_entry(Item, raw, lambda data: data["g"] == 2) is None
    with pytest.raises(KeyError):
        cache_rows.read_entry(Item, raw, lambda data: True)
