"""CachedFetcher, cache keys and invalidation, on the local-memory cache and SQLite.

No server needed: the real Redis is exercised in tests/test_redis_cache.py. Outages are
simulated with :class:`FlakyCache` (local memory that raises ``ConnectionRefusedError`` on
demand) and with django-redis pointed at a closed port.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import django_filters
import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.db import connection, models, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext, isolate_apps
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import datapipe_django
from datapipe_django import FallbackMode, Pipeline, PipelineRequest, invalidate
from datapipe_django._internal import breaker as breaker_module
from datapipe_django._internal import oncommit
from datapipe_django.cache import generations
from datapipe_django.cache import guard as cache_guard
from datapipe_django.cache import rows as cache_rows
from datapipe_django.cache.keys import Uncacheable, canonical, slug
from datapipe_django.cache.rows import decode_rows, encode_rows
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers import BatchEnricher
from datapipe_django.enrichers.base import EnrichContext
from datapipe_django.fetchers import CachedFetcher, FetchRequest, FetchResult, ORMFetcher
from datapipe_django.fetchers import cache as cache_module
from datapipe_django.paging import Ordering
from datapipe_django.specs import Eq, In, MatchAll
from datapipe_django.test import InMemoryFetcher
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item, Owner

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parent.parent


def make(pk, *, tenant="t1", minutes=None, name=None, amount=None, status="queued",
         owner=None, category=None) -> Item:
    return Item(id=pk, tenant=tenant, name=name or f"n{pk}", status=status,
                amount=pk if amount is None else amount,
                created_at=BASE + dt.timedelta(minutes=pk if minutes is None else minutes),
                day=BASE.date(), owner=owner, category=category)


def pipeline(*fetchers, name="cache-test", **kwargs) -> Pipeline:
    kwargs.setdefault("timeout", None)
    kwargs.setdefault("tenant_field", "tenant")
    return Pipeline(name, model=Item, fetchers=list(fetchers), ordering=("-created_at", "-id"),
                    ordering_fields=("created_at", "amount", "name"), register=False, **kwargs)


def ids(result) -> list[int]:
    return [row.pk for row in result.items]


def outcome(result) -> str:
    return result.attempts[0].meta.get("cache", "")


class SlowFetcher(InMemoryFetcher):
    """An in-memory source that takes ``delay`` seconds (``calls`` counts its fetches)."""

    def __init__(self, rows, *, delay=0.0, **kwargs):
        super().__init__(rows, **kwargs)
        self.delay = delay

    def fetch(self, request):
        time.sleep(self.delay)
        return super().fetch(request)


class FlakyCache(LocMemCache):
    """Local memory that refuses connections while ``FlakyCache.down`` is true."""

    down = False
    calls = 0

    def _check(self):
        type(self).calls += 1
        if type(self).down:
            raise ConnectionRefusedError(111, "Connection refused")

    def get_many(self, *args, **kwargs):
        self._check()
        return super().get_many(*args, **kwargs)

    def set_many(self, *args, **kwargs):
        self._check()
        return super().set_many(*args, **kwargs)

    def add(self, *args, **kwargs):
        self._check()
        return super().add(*args, **kwargs)

    def set(self, *args, **kwargs):
        self._check()
        return super().set(*args, **kwargs)


class BuggyCache(LocMemCache):
    """A cache whose client has a bug: not an outage, so it must not be swallowed."""

    def get_many(self, *args, **kwargs):
        raise TypeError("bug in the cache client")


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """A fresh key prefix per test (entries of other tests are never seen), a closed circuit
    breaker, no held-back invalidations; ``FlakyCache`` up."""
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings.CACHES = {**settings.CACHES,
                       "flaky": {"BACKEND": "tests.test_cache.FlakyCache", "LOCATION": "flaky"},
                       "buggy": {"BACKEND": "tests.test_cache.BuggyCache", "LOCATION": "buggy"}}
    FlakyCache.down, FlakyCache.calls = False, 0
    cache_guard._guards.clear()
    generations._pending.clear()
    yield
    FlakyCache.down = False
    cache_guard._guards.clear()
    generations._pending.clear()


def run_threads(target, count: int) -> None:
    """``target()`` on ``count`` threads at once; returns when all have ended."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def position(cursor: str) -> str:
    """The payload of a signed cursor, without the signing time and signature."""
    return cursor.rsplit(":", 2)[0]


def fetch_request(**changes) -> FetchRequest:
    base = FetchRequest(request=PipelineRequest(auth_type="public"), model=Item,
                        spec=Eq("status", "queued"),
                        ordering=Ordering.for_model(Item, ["-created_at"]), size=11,
                        tenant_field="tenant", tenant="t1", pipeline="keys")
    return dataclasses.replace(base, **changes)


# -- keys --------------------------------------------------------------------------------------

def test_canonical_forms_tell_types_apart_and_ignore_order():
    forms = [1, "1", True, 1.0, decimal.Decimal("1"), [1], {1}, None, b"1",
             dt.date(2026, 1, 1), "2026-01-01", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    assert len({json.dumps(canonical(v)) for v in forms}) == len(forms)
    assert canonical({3, 1, 2}) == canonical({2, 3, 1})
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical(Item.Status.QUEUED) == canonical("queued")  # a choice is its value
    assert canonical(Category(pk=3)) != canonical(3)
    assert canonical(Eq("a", 1) & In("b", [1, 2])) != canonical(Eq("a", 1) & In("b", [1, 3]))
    with pytest.raises(Uncacheable):
        canonical(object())
    with pytest.raises(Uncacheable):
        canonical(Category(name="unsaved"))


def test_every_part_of_a_request_changes_its_key():
    fetcher = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
    variants = {
        "base": fetch_request(),
        "tenant": fetch_request(tenant="t2"),
        "auth_type": fetch_request(request=PipelineRequest(auth_type="private")),
        "filters": fetch_request(spec=Eq("status", "processed")),
        "no filters": fetch_request(spec=MatchAll()),
        "search": fetch_request(search="invoice"),
        "ordering": fetch_request(ordering=Ordering.for_model(Item, ["amount"])),
        "cursor": fetch_request(after=(BASE, 3)),
        "offset": fetch_request(offset=10),
        "size": fetch_request(size=21),
        "pk": fetch_request(pk=5),
        "pipeline": fetch_request(pipeline="other"),
    }
    keys = {name: fetcher.cache_key(r) for name, r in variants.items()}
    assert len(set(keys.values())) == len(keys), keys
    # Equal requests, equal keys; the tenant is normalised as the tenant field's value.
    assert fetcher.cache_key(fetch_request()) == keys["base"]
    assert fetcher.cache_key(fetch_request(tenant=1)) == fetcher.cache_key(fetch_request(
        tenant="1"))
    vary = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30,
                         vary=lambda r: r.request.context.get("locale"))
    assert vary.cache_key(fetch_request(request=PipelineRequest(context={"locale": "en"}))) \
        != vary.cache_key(fetch_request(request=PipelineRequest(context={"locale": "hi"})))


def test_the_shape_of_the_pipeline_versions_every_key():
    request = fetch_request()
    plain = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30).cache_key(request)
    assert CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30, version=2).cache_key(
        request) != plain
    assert CachedFetcher(InMemoryFetcher([], name="mem2"), name="mem",
                         ttl=30).cache_key(request) != plain
    one = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
    pipeline(one, name="keys")
    two = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
    pipeline(two, InMemoryFetcher([], name="archive"), name="keys")
    assert one.cache_key(request) != two.cache_key(request) != plain
    assert plain.startswith(f"{datapipe_settings.CACHE_KEY_PREFIX}:1:keys:mem:")


def test_keys_are_the_same_in_every_process():
    script = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'; "
        "django.setup(); from tests.test_cache import stable_key; print(stable_key())"
    )
    keys = {stable_key()}
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True, timeout=60)
        keys.add(out.stdout.strip().splitlines()[-1])
    assert len(keys) == 1, keys


def stable_key() -> str:
    with override_settings(DATAPIPE={"CACHE_KEY_PREFIX": "stable"}):
        fetcher = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
        spec = Eq("status", "queued") & In("amount", {3, 1, 2})
        return fetcher.cache_key(fetch_request(spec=spec, search="a b", after=(BASE, 7)))


def test_the_key_layout_never_changes():
    """Literal keys, computed once by the release that defined the layout: a refactoring that
    moves a class the keys name (a spec leaf, say) or changes a digest fails here, not in
    production as a cache emptied at deploy."""
    assert stable_key() == (
        "stable:1:keys:mem:d156e7a410ce68dc:f29b7910e28ce42e48dda4e14ff70560cb56c612")
    with override_settings(DATAPIPE={"CACHE_KEY_PREFIX": "stable"}):
        fetcher = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
        assert fetcher.cache_key(fetch_request(pk=5)) == (
            "stable:1:keys:mem:d156e7a410ce68dc:a68188d8bc726a5fbcee08b0d3ba8ab9b01caea6")
        assert generations.generation_keys(Item, "tenant", "t1") == ([
            "stable:gen1:testapp.item",
            "stable:gen1:testapp.item:tenant:6e14051745f7649a293495ba32d21fa2"], "t1")
        enricher = BatchEnricher("txn", key="txn_id", load=lambda keys: {}, cache_ttl=60)
        scope = EnrichContext(pipeline="payouts", expand=frozenset({"txn"}), tenant="t1",
                              auth_type="private")
        assert enricher._cache_keys([7, "abc"], scope) == {
            7: "stable:enrich1:payouts:txn:84f97de2d9e617eca84f8632:i7",
            "abc": "stable:enrich1:payouts:txn:84f97de2d9e617eca84f8632:"
                   "6cc43f858fbb763301637b5af970e2a4"}


def test_a_spec_class_of_the_library_is_named_by_its_public_path_in_keys():
    def leaf(module: str) -> type:
        cls = type("Moved", (Eq,), {"__module__": module, "__qualname__": "Moved"})
        return dataclasses.dataclass(frozen=True)(cls)

    here, moved = leaf("datapipe_django.specs"), leaf("datapipe_django.specs.tree")
    assert canonical(here("status", "a")) == canonical(moved("status", "a"))
    assert canonical(leaf("myapp.specs")("status", "a")) != canonical(here("status", "a"))


def test_the_old_module_paths_still_import():
    from datapipe_django import cache_keys, invalidation
    from datapipe_django.cache import keys

    assert cache_keys.digest is keys.digest and invalidation.invalidate is invalidate
    assert invalidation.CacheGuard is cache_guard.CacheGuard
    assert cache_module.decode_rows is decode_rows and cache_module.CacheStats


def test_keys_are_safe_for_every_backend():
    assert slug("payouts") == "payouts"
    assert slug("my pipeline") != slug("my_pipeline")
    assert " " not in slug("my pipeline") and len(slug("x" * 300)) <= 40
    fetcher = CachedFetcher(InMemoryFetcher([make(1)], name="mémoire vive"), ttl=30)
    p = pipeline(fetcher, name="paiements récents")
    p.execute(tenant="t1")  # warnings are errors here: no CacheKeyWarning
    assert outcome(p.execute(tenant="t1")) == "hit"


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


# -- serving -----------------------------------------------------------------------------------

def test_a_hit_skips_the_source_and_keeps_its_name():
    source = InMemoryFetcher([make(i) for i in range(1, 6)], name="appdb", priority=3)
    cached = CachedFetcher(source, ttl=30)
    assert (cached.name, cached.priority) == ("appdb", 3)
    p = pipeline(cached)
    first = p.execute(tenant="t1", limit=2)
    second = p.execute(tenant="t1", limit=2)
    assert ids(first) == ids(second) == [5, 4]
    # The same signed position (the signature's timestamp may be a second apart).
    assert second.has_more and position(second.next_cursor) == position(first.next_cursor)
    assert (outcome(first), outcome(second)) == ("miss", "hit")
    assert second.source == "appdb"  # X-Datapipe-Source names the store, not the cache
    assert len(source.calls) == 1
    assert cached.stats.as_dict() == {**dict.fromkeys(cached.stats.NAMES, 0),
                                      "hits": 1, "misses": 1}
    following = p.execute(tenant="t1", limit=2, cursor=second.next_cursor)
    assert ids(following) == [3, 2] and outcome(following) == "miss"


def test_can_handle_and_runs_inline_are_the_inner_fetchers():
    class Picky(InMemoryFetcher):
        def runs_inline(self, request):
            return True

    cached = CachedFetcher(Picky([], name="m", can_handle=lambda r: r.search is None), ttl=5)
    assert cached.can_handle(fetch_request())
    assert not cached.can_handle(fetch_request(search="x"))
    assert "declined" in cached.can_handle(fetch_request(search="x")).reason
    assert cached.runs_inline(fetch_request())
    with pytest.raises(AttributeError):
        cached.using  # noqa: B018  (an in-memory fetcher has no database alias)
    assert CachedFetcher(ORMFetcher("archive"), ttl=5).using == "archive"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ttl": 0}, "`ttl` must be positive"),
    ({"ttl": "30"}, "`ttl` must be positive"),
    ({"stale_ttl": -1}, "`stale_ttl`"),
    ({"lock_timeout": 0}, "`lock_timeout`"),
])
def test_configuration_mistakes_are_improperly_configured(kwargs, message):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=message):
        CachedFetcher(InMemoryFetcher([]), **kwargs)
    with pytest.raises(ImproperlyConfigured, match="is not a fetcher"):
        CachedFetcher(object(), ttl=5)


def test_entries_expire_after_ttl_and_may_be_served_stale_while_one_caller_refreshes(
        monkeypatch):
    clock = [time.time()]
    monkeypatch.setattr(cache_module.time, "time", lambda: clock[0])
    monkeypatch.setattr("django.core.cache.backends.locmem.time.time", lambda: clock[0])
    source = InMemoryFetcher([make(1)], name="m")
    plain = pipeline(CachedFetcher(source, ttl=10))
    plain.execute(tenant="t1")
    clock[0] += 11
    assert outcome(plain.execute(tenant="t1")) == "miss"

    source = InMemoryFetcher([make(1)], name="m")
    swr = CachedFetcher(source, ttl=10, stale_ttl=30)
    p = pipeline(swr, name="cache-swr")
    p.execute(tenant="t1")
    source.rows = [make(1, name="renamed")]  # changed behind the cache's back (no signal)
    clock[0] += 15
    plan = swr._plan(source.calls[0], frozenset())
    assert caches["default"].add(plan.lock_key, "someone else", 30)  # another caller refreshes
    stale = p.execute(tenant="t1")
    assert outcome(stale) == "stale" and stale.items[0].name == "n1"
    caches["default"].delete(plan.lock_key)
    refreshed = p.execute(tenant="t1")
    assert outcome(refreshed) == "miss" and refreshed.items[0].name == "renamed"
    assert outcome(p.execute(tenant="t1")) == "hit"
    clock[0] += 41
    assert outcome(p.execute(tenant="t1")) == "miss"  # past ttl + stale_ttl: gone
    assert swr.stats["stale"] == 1


def test_concurrent_misses_compute_once():
    source = SlowFetcher([make(i) for i in range(1, 4)], name="slow", delay=0.3)
    p = pipeline(CachedFetcher(source, ttl=30))
    barrier = threading.Barrier(12)
    results = []

    def call():
        barrier.wait()
        results.append(p.execute(tenant="t1", limit=2))

    run_threads(call, 12)
    assert len(source.calls) == 1
    assert all(ids(r) == [3, 2] for r in results) and len(results) == 12
    assert sorted(outcome(r) for r in results) == ["hit"] * 11 + ["miss"]


def test_waiters_compute_themselves_when_the_lock_holder_fails():
    from datapipe_django import SourcesUnavailable

    source = SlowFetcher([make(1)], name="slow", delay=0.2, available=False)
    p = pipeline(CachedFetcher(source, ttl=30))
    errors = []

    def call():
        try:
            p.execute(tenant="t1")
        except SourcesUnavailable as exc:
            errors.append(exc)

    run_threads(call, 4)
    assert len(errors) == 4  # nobody waits forever, nobody gets a cache error
    assert len(source.calls) >= 2


def test_a_request_that_cannot_be_keyed_is_served_without_the_cache():
    source = InMemoryFetcher([make(1)], name="m")
    cached = CachedFetcher(source, ttl=30)
    request = fetch_request(spec=Eq("name", object()), pipeline="odd")
    result = cached.fetch(request)
    assert result.meta["cache"] == "bypass" and "canonical" in result.meta["cache_reason"]


def test_rows_of_another_tenant_are_never_stored(caplog):
    class Leaky(InMemoryFetcher):
        def fetch(self, request):
            return FetchResult([make(1, tenant="t2")], False)

    cached = CachedFetcher(Leaky([], name="leaky"), ttl=30)
    for _ in range(2):
        assert cached.fetch(fetch_request()).meta["cache"] == "miss"
    assert "another tenant" in caplog.text


# -- outages -----------------------------------------------------------------------------------

def test_a_cache_outage_is_a_bypass_with_a_warning_and_a_short_circuit(settings, caplog,
                                                                        monkeypatch):
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE_BREAKER_SECONDS": 0.3}
    # The breaker's clock moves only when this test says: the circuit stays open as long as
    # the test needs, however slow the machine.
    clock = [1000.0]
    monkeypatch.setattr(breaker_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    source = InMemoryFetcher([make(i) for i in range(1, 4)], name="appdb")
    cached = CachedFetcher(source, ttl=30, cache="flaky")
    p = pipeline(cached)
    assert outcome(p.execute(tenant="t1")) == "miss"
    FlakyCache.down = True
    caplog.set_level(logging.WARNING, "datapipe_django.cache")
    down = [p.execute(tenant="t1")]
    calls = FlakyCache.calls
    down += [p.execute(tenant="t1") for _ in range(4)]
    assert FlakyCache.calls == calls  # the circuit is open: the cache is not called at all
    assert all(ids(r) == [3, 2, 1] and outcome(r) == "bypass" for r in down)
    assert cached.stats["errors"] == 1 and cached.stats["bypasses"] == 5
    assert "Cache 'flaky' is unavailable (ConnectionRefusedError" in caplog.text
    clock[0] += 0.25
    assert outcome(p.execute(tenant="t1")) == "bypass"  # still open: no probe yet
    assert FlakyCache.calls == calls
    clock[0] += 0.1
    assert outcome(p.execute(tenant="t1")) == "bypass"  # the probe fails: open again
    assert cached.stats["errors"] == 2
    FlakyCache.down = False
    assert outcome(p.execute(tenant="t1")) == "bypass"  # open for another 0.3 s
    clock[0] += 0.35
    assert outcome(p.execute(tenant="t1")) == "hit"  # the probe succeeds: closed
    assert "reachable again" in caplog.text
    assert not cached.guard.is_open


def test_an_unreachable_redis_costs_one_connection_attempt(settings):
    settings.CACHES = {**settings.CACHES, "nowhere": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}}}
    cached = CachedFetcher(InMemoryFetcher([make(1)], name="m"), ttl=30, cache="nowhere")
    p = pipeline(cached)
    start = time.monotonic()
    results = [p.execute(tenant="t1") for _ in range(20)]
    assert time.monotonic() - start < 2
    assert all(ids(r) == [1] and outcome(r) == "bypass" for r in results)
    assert cached.stats["errors"] == 1
    assert "ConnectionError" in results[0].attempts[0].meta["cache_reason"]


def test_a_bug_in_the_cache_client_is_not_swallowed():
    p = pipeline(CachedFetcher(InMemoryFetcher([make(1)], name="m"), ttl=30, cache="buggy"))
    with pytest.raises(TypeError, match="bug in the cache client"):
        p.execute(tenant="t1")


@pytest.mark.django_db(transaction=True)
def test_invalidations_held_back_by_an_outage_are_written_before_the_next_read(settings):
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE_BREAKER_SECONDS": 0.1}
    Item.objects.bulk_create([make(1), make(2)])
    p = pipeline(CachedFetcher(ORMFetcher("default"), ttl=300, cache="flaky"))
    assert outcome(p.execute(tenant="t1")) == "miss"
    FlakyCache.down = True
    row = Item.objects.get(pk=2)
    row.name = "written during the outage"
    row.save()  # the token cannot be replaced now
    assert generations._pending["flaky"]
    assert p.execute(tenant="t1").items[0].name == "written during the outage"  # bypass
    FlakyCache.down = False
    time.sleep(0.15)
    result = p.execute(tenant="t1")
    assert result.items[0].name == "written during the outage"
    assert outcome(result) == "miss" and not generations._pending.get("flaky")


# -- invalidation ------------------------------------------------------------------------------

DB = pytest.mark.django_db(transaction=True)


def orm_pipeline(**kwargs):
    kwargs.setdefault("filterset_class", ItemFilterSet)
    return pipeline(CachedFetcher(ORMFetcher("default"), ttl=300, **kwargs.pop("cache", {})),
                    **kwargs)


@DB
def test_a_hit_makes_no_query_and_rebuilds_ordinary_instances():
    Item.objects.bulk_create([make(i) for i in range(1, 6)])
    p = orm_pipeline()
    first = p.execute(tenant="t1", limit=3, filters={"status": "queued"})
    with CaptureQueriesContext(connection) as queries:
        second = p.execute(tenant="t1", limit=3, filters={"status": "queued"})
    assert len(queries) == 0 and outcome(second) == "hit"
    assert ids(first) == ids(second) == [5, 4, 3]
    row = second.items[0]
    assert row._state.db == "default" and not row._state.adding
    assert (row.created_at, row.day, row.amount) == (first.items[0].created_at, BASE.date(), 5)
    row.name = "saved from a cached row"
    row.save()
    assert Item.objects.get(pk=5).name == "saved from a cached row"


@DB
def test_save_delete_and_queryset_delete_invalidate():
    Item.objects.bulk_create([make(i) for i in range(1, 6)])
    p = orm_pipeline()
    p.execute(tenant="t1", limit=3)
    row = Item.objects.get(pk=5)
    row.amount = 500
    row.save()
    after_save = p.execute(tenant="t1", limit=3)
    assert outcome(after_save) == "miss" and after_save.items[0].amount == 500
    Item.objects.get(pk=4).delete()
    assert ids(p.execute(tenant="t1", limit=3)) == [5, 3, 2]
    Item.objects.filter(pk__in=[5, 3]).delete()
    assert ids(p.execute(tenant="t1", limit=3)) == [2, 1]
    Item.objects.create(**{f.attname: getattr(make(9), f.attname)
                           for f in Item._meta.concrete_fields})
    assert ids(p.execute(tenant="t1", limit=3)) == [9, 2, 1]


@DB
def test_writes_without_signals_need_invalidate():
    Item.objects.bulk_create([make(i) for i in range(1, 4)])
    p = orm_pipeline()
    p.execute(tenant="t1")
    Item.objects.bulk_create([make(4)])
    assert ids(p.execute(tenant="t1")) == [3, 2, 1]  # no signal: the old page (until ttl)
    invalidate(Item)
    assert ids(p.execute(tenant="t1")) == [4, 3, 2, 1]
    Item.objects.filter(pk=4).update(name="updated")
    invalidate(Item, tenant="t1")
    assert p.execute(tenant="t1").items[0].name == "updated"
    Item.objects.bulk_update([make(1, name="bulk")], ["name"])
    datapipe_django.invalidate(Item, "t1")
    assert p.execute(tenant="t1").items[-1].name == "bulk"


@DB
def test_a_write_invalidates_its_own_tenant_only_unless_the_row_moves():
    Item.objects.bulk_create([make(1, tenant="t1"), make(2, tenant="t2"), make(3, tenant="t2")])
    p = orm_pipeline()
    p.execute(tenant="t1")
    p.execute(tenant="t2")
    row = Item.objects.get(pk=1)
    row.name = "t1 changed"
    row.save()
    assert outcome(p.execute(tenant="t2")) == "hit"
    assert p.execute(tenant="t1").items[0].name == "t1 changed"
    assert outcome(p.execute(tenant="t1")) == "hit"
    moved = Item.objects.get(pk=2)
    moved.tenant = "t1"
    moved.save()
    assert ids(p.execute(tenant="t1")) == [2, 1]
    assert ids(p.execute(tenant="t2")) == [3]
    Item(id=3, tenant="t1", name="overwritten blind", status="queued", amount=3,
         created_at=BASE, day=BASE.date()).save()  # an UPDATE whose old tenant is unknown
    assert ids(p.execute(tenant="t2")) == []
    Item.objects.filter(pk=3).update(tenant="t2")
    invalidate(Item, "t2")
    invalidate(Item, "t1")
    assert ids(p.execute(tenant="t2")) == [3]
    assert outcome(p.execute(tenant="t2")) == "hit"
    Item(id=3).delete()  # a row never loaded: its tenant is unknown, every tenant is dropped
    assert ids(p.execute(tenant="t2")) == []


@DB
def test_writes_to_related_models_the_filters_read_invalidate():
    alice, bob = Owner.objects.create(name="alice"), Owner.objects.create(name="bob")
    Item.objects.bulk_create([make(1, owner=alice), make(2, owner=bob)])
    p = orm_pipeline()
    assert ids(p.execute(tenant="t1", filters={"owner_name": "alice"})) == [1]
    bob.name = "alice"
    bob.save()
    assert ids(p.execute(tenant="t1", filters={"owner_name": "alice"})) == [2, 1]


class CustomOnly(django_filters.FilterSet):
    """Only the ``custom`` method filter, whose spec joins ``owner``: nothing declares it."""

    custom = django_filters.CharFilter(method="filter_custom")
    filter_custom = ItemFilterSet.filter_custom
    spec_custom = ItemFilterSet.spec_custom

    class Meta:
        model = Item
        fields: list[str] = []


@DB
def test_a_method_filter_that_joins_needs_depends_on(caplog):
    owner = Owner.objects.create(name="Zed")
    Item.objects.bulk_create([make(1, owner=owner, name="plain")])
    p = orm_pipeline(filterset_class=CustomOnly)
    assert outcome(p.execute(tenant="t1", filters={"custom": "zed"})) == "bypass"
    assert "depends_on" in caplog.text
    declared = orm_pipeline(filterset_class=CustomOnly, cache={"depends_on": [Owner]})
    declared.execute(tenant="t1", filters={"custom": "zed"})
    assert outcome(declared.execute(tenant="t1", filters={"custom": "zed"})) == "hit"
    owner.name = "Someone"
    owner.save()
    assert ids(declared.execute(tenant="t1", filters={"custom": "zed"})) == []


@DB
def test_deleting_the_target_of_a_set_null_key_invalidates():
    category = Category.objects.create(name="c")
    Item.objects.bulk_create([make(1, category=category)])
    p = orm_pipeline()
    assert p.execute(tenant="t1").items[0].category_id == category.pk
    category.delete()  # Django sets Item.category to NULL with an UPDATE and no Item signal
    assert p.execute(tenant="t1").items[0].category_id is None


@DB
def test_many_to_many_changes_invalidate():
    group = Group.objects.create(name="ops")
    cached = CachedFetcher(ORMFetcher("default"), ttl=300)
    p = Pipeline("cache-groups", model=Group, fetchers=[cached], register=False, timeout=None)
    p.execute()
    assert outcome(p.execute()) == "hit"
    group.permissions.add(Permission.objects.first())
    assert outcome(p.execute()) == "miss"
    group.permissions.clear()
    assert outcome(p.execute()) == "miss"


@DB
def test_inside_a_transaction_that_wrote_reads_skip_the_cache():
    Item.objects.bulk_create([make(1), make(2)])
    p = orm_pipeline()
    p.execute(tenant="t1")
    with transaction.atomic():
        assert outcome(p.execute(tenant="t1")) == "hit"  # nothing written yet
        Item.objects.filter(pk=1).delete()
        inside = p.execute(tenant="t1")
        assert ids(inside) == [2] and outcome(inside) == "bypass"
        transaction.set_rollback(True)
    after = p.execute(tenant="t1")
    assert ids(after) == [2, 1]  # the rolled-back delete was never published
    assert outcome(after) == "hit"


@DB
def test_one_token_change_per_transaction_however_many_rows():
    p = orm_pipeline()
    p.execute(tenant="t1")
    with transaction.atomic():
        for i in range(1, 30):
            Item.objects.create(**{f.attname: getattr(make(i), f.attname)
                                   for f in Item._meta.concrete_fields})
        bumps = [f for f in oncommit.waiting(connection) if isinstance(f, generations._Bump)]
        assert len(bumps) == 1
    assert len(p.execute(tenant="t1").items) == 10


@DB
def test_invalidate_inside_a_transaction_also_acts_on_commit(django_capture_on_commit_callbacks):
    Item.objects.bulk_create([make(1)])
    p = orm_pipeline()
    p.execute(tenant="t1")
    with transaction.atomic():
        Item.objects.filter(pk=1).update(name="later")
        invalidate(Item)
        assert outcome(p.execute(tenant="t1")) == "bypass"
    assert p.execute(tenant="t1").items[0].name == "later"


@DB
def test_rows_read_inside_a_transaction_are_published_on_commit_only():
    Item.objects.bulk_create([make(1)])
    p = orm_pipeline()
    with transaction.atomic():
        Item.objects.bulk_create([make(2)])  # no signal: the cache cannot know
        inside = p.execute(tenant="t1")
        assert ids(inside) == [2, 1]
        assert inside.attempts[0].meta == {"cache": "miss", "cache_store": "on_commit"}
        transaction.set_rollback(True)
    assert ids(p.execute(tenant="t1")) == [1]  # the rolled-back row was never published
    with transaction.atomic():
        p.execute(tenant="t1")
    assert outcome(p.execute(tenant="t1")) == "hit"


@pytest.mark.django_db
def test_in_a_test_case_entries_and_invalidations_wait_for_on_commit_callbacks(
        django_capture_on_commit_callbacks):
    p = orm_pipeline()
    with django_capture_on_commit_callbacks(execute=True):
        Item.objects.create(**{f.attname: getattr(make(1), f.attname)
                               for f in Item._meta.concrete_fields})
    assert outcome(p.execute(tenant="t1")) == "miss"
    assert outcome(p.execute(tenant="t1")) == "miss"  # the test's transaction never commits
    with django_capture_on_commit_callbacks(execute=True):
        p.execute(tenant="t1")
    assert outcome(p.execute(tenant="t1")) == "hit"


def test_pipelines_modules_are_discovered_at_startup():
    # tests/testapp/pipelines.py is imported by the app's ready(), not by this test.
    assert "test-items" in {p.name for p in datapipe_django.registry.all_pipelines()}


def test_system_checks_name_a_missing_cache_alias_and_a_per_process_cache(settings):
    from django.core import checks

    from datapipe_django import registry

    cached = CachedFetcher(InMemoryFetcher([]), ttl=5, cache="nope")
    Pipeline("cache-check", model=Item, fetchers=[cached])
    try:
        errors = checks.run_checks(tags=[checks.Tags.caches])
        assert "datapipe_django.E003" in {e.id for e in errors}
        settings.DATAPIPE = {**settings.DATAPIPE, "CACHE": "default"}
        cached._cache = None
        deploy = checks.run_checks(tags=[checks.Tags.caches], include_deployment_checks=True)
        assert "datapipe_django.W003" in {e.id for e in deploy}
    finally:
        registry.unregister("cache-check")


def test_chain_modes_see_the_cached_rows_as_their_source():
    recent = InMemoryFetcher([make(i) for i in range(3, 6)], name="appdb")
    archive = InMemoryFetcher([make(i) for i in range(1, 6)], name="archive")
    for mode in FallbackMode:
        p = pipeline(CachedFetcher(recent, ttl=30), archive, fallback=mode)
        expected = [p.execute(tenant="t1", limit=4, offset=1) for _ in range(2)]
        assert ids(expected[0]) == ids(expected[1]), mode
        assert expected[0].sources == expected[1].sources, mode
