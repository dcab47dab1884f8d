"""Cached rows as JSON, and the model instances rebuilt from them.

An entry holds per row the values of its loaded concrete fields (JSON types for Django's
built-in fields, ``value_to_string``/``to_python`` for any other, as Django's own serializers
do): never a pickle of a model instance or a queryset. :func:`encode_rows` writes them;
:func:`read_entry` and :func:`decode_rows` rebuild what ``Model.from_db`` builds on the inner
fetcher's database alias (ordinary unmodified instances whose ``_state.db`` is where they came
from), without running ``__init__`` when nobody could tell (:func:`fast_build`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import json
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from django.db import models
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

from datapipe_django.cache.generations import LOADED_TENANTS, remember_tenants, tenant_attnames

__all__ = ["decode_rows", "encode_rows", "fast_build", "read_entry"]

orjson: Any
try:  # the `fast` extra: entries read twice as fast (they are written by the standard library)
    import orjson
except ImportError:  # pragma: no cover - orjson is in the dev extra
    orjson = None


_NATIVE = frozenset({
    models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField,
    models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
    models.PositiveBigIntegerField, models.PositiveSmallIntegerField, models.CharField,
    models.TextField, models.SlugField, models.EmailField, models.URLField, models.BooleanField,
    models.FloatField,
})


def _iso(obj: Any, value: Any) -> Any:
    return value.isoformat()


def _text(obj: Any, value: Any) -> Any:
    return str(value)


_BY_TYPE: dict[type, tuple[Callable[[Any, Any], Any], Callable[[Any], Any]]] = {
    models.DateTimeField: (_iso, dt.datetime.fromisoformat),
    models.DateField: (_iso, dt.date.fromisoformat),
    models.TimeField: (_iso, dt.time.fromisoformat),
    models.DecimalField: (_text, decimal.Decimal),
    models.UUIDField: (_text, uuid.UUID),
}

#: (attname, encoder or None for "as is", decoder or None for "as is")
_Codec = tuple[str, Callable[[Any, Any], Any] | None, Callable[[Any], Any] | None]


def _value_codec(field: Any) -> tuple[Callable[[Any, Any], Any] | None,
                                      Callable[[Any], Any] | None] | None:
    """A codec working on the value alone, for Django's own field classes (None otherwise)."""
    kind = type(field)
    if kind in _NATIVE:
        return None, None
    if kind in _BY_TYPE:
        return _BY_TYPE[kind]
    if kind is models.JSONField and field.encoder is None and field.decoder is None:
        return None, None
    if field.is_relation and (field.many_to_one or field.one_to_one):
        return _value_codec(field.target_field)
    return None


def _field_codec(field: Any) -> _Codec:
    fast = _value_codec(field)
    if fast is not None:
        return (field.attname, *fast)
    # Any other field: the contract Django's serializers rely on.
    return (field.attname, lambda obj, value: field.value_to_string(obj), field.to_python)


@lru_cache(maxsize=256)
def _codecs(model: type[models.Model]) -> tuple[_Codec, ...]:
    return tuple(_field_codec(f) for f in model._meta.concrete_fields)


def encode_rows(model: type[models.Model], rows: Sequence[Any], db: str | None
                ) -> tuple[list[list[str]], list[list[Any]]]:
    """Rows as (field sets, records): a record is ``[field set index, values]`` (plus the
    row's alias when it is not ``db``). Deferred fields are left out, as loaded."""
    codecs = _codecs(model)
    fieldsets: dict[tuple[str, ...], int] = {}
    records: list[list[Any]] = []
    for obj in rows:
        values = obj.__dict__
        present = tuple(c[0] for c in codecs if c[0] in values)
        index = fieldsets.setdefault(present, len(fieldsets))
        encoded = []
        for attname, encode, _ in codecs:
            if attname not in values:
                continue
            value = values[attname]
            encoded.append(value if value is None or encode is None else encode(obj, value))
        record: list[Any] = [index, encoded]
        if obj._state.db != db:
            record.append(obj._state.db)
        records.append(record)
    return [list(fs) for fs in fieldsets], records


def decode_rows(model: type[models.Model], fieldsets: list[list[str]],
                records: list[list[Any]], db: str | None) -> list[models.Model]:
    """Model instances from :func:`encode_rows` output: what ``Model.from_db(db, fields,
    values)`` returns (built without ``__init__`` when :func:`fast_build` holds, see
    :func:`_record_decoder`)."""
    if fast_build(model):
        return _decode_generated(model, fieldsets, records, db, checked=False)
    by_attname = {c[0]: c[2] for c in _codecs(model)}
    decoders = [[by_attname[a] for a in fs] for fs in fieldsets]
    build = model.from_db
    rows = []
    for record in records:
        index, values = record[0], record[1]
        decs = decoders[index]
        python = [v if v is None or d is None else d(v) for v, d in zip(values, decs, strict=True)]
        rows.append(build(record[2] if len(record) > 2 else db, fieldsets[index], python))
    return rows


def _decode_generated(model: type[models.Model], fieldsets: list[list[str]],
                      records: list[list[Any]], db: str | None, checked: bool
                      ) -> list[models.Model]:
    """:func:`decode_rows` when :func:`fast_build` holds: through :func:`_record_decoder`.
    ``checked``: the records were parsed by orjson, which reads an integer past 64 bits as a
    float; such a float in an integer field raises :class:`_WideInteger` (see
    :func:`_orjson_reads`)."""
    tracked = tenant_attnames(model) if post_init.has_listeners(model) else ()
    rebuild = [_record_decoder(model, tuple(fs), tracked, checked) for fs in fieldsets]
    return [rebuild[record[0]](record, db) for record in records]


class _WideInteger(ValueError):
    """orjson read an integer field's value as a float: an integer past 64 bits."""


_INTEGERS = frozenset({
    models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField,
    models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
    models.PositiveBigIntegerField, models.PositiveSmallIntegerField,
})
_TEXTS = frozenset({models.CharField, models.TextField, models.SlugField, models.EmailField,
                    models.URLField, models.BooleanField})


def _stored_kind(field: Any) -> str:
    """How a field's value is in an entry: ``text`` (a string or a boolean, whoever reads it),
    ``int`` (a JSON integer) or ``other`` (floats, JSON documents...)."""
    if field.is_relation and (field.many_to_one or field.one_to_one):
        return _stored_kind(field.target_field)
    kind = type(field)
    if kind in _INTEGERS:
        return "int"
    codec = _value_codec(field)
    if kind in _TEXTS or codec is None or codec[1] is not None:
        return "text"  # str/bool, or written as text (isoformat, str, value_to_string)
    return "other"


@lru_cache(maxsize=256)
def _orjson_reads(model: type[models.Model]) -> bool:
    """Whether orjson may read ``model``'s entries: every field holds text or an integer (an
    integer past 64 bits, which orjson reads as a float, is caught by the checked decoder), and
    the rows are rebuilt by the generated decoders. Floats (an int in a FloatField) and JSON
    documents are left to the standard library, which wrote them."""
    return orjson is not None and all(_stored_kind(f) != "other"
                                      for f in model._meta.concrete_fields)


@lru_cache(maxsize=1024)
def _record_decoder(model: type[models.Model], names: tuple[str, ...],
                    tracked: tuple[str, ...], checked: bool = False
                    ) -> Callable[[list[Any], str | None], Any]:
    """``(record, db) -> instance`` for the records of one field set, when :func:`fast_build`
    holds: the instance ``Model.from_db`` builds, made without running ``__init__`` (as
    unpickling does, several times faster), from one function generated for the field set
    (its values unpacked into locals, each decoded where its field needs it, the ``__dict__``
    written as one literal). The generated code names only the model's own
    attnames (a field set naming anything else raises ``KeyError``: an unreadable entry)."""
    env: dict[str, Any] = {"_new": model.__new__, "_model": model, "_State": ModelState,
                           "_TENANTS": LOADED_TENANTS, "_Wide": _WideInteger}
    lines = _decoding_lines(model, names, checked, env)
    items = _dict_items(names, tracked)
    source = "\n".join([
        "def decode(record, db):",
        *lines,
        "    state = _State()",
        "    state.adding = False",
        "    state.db = record[2] if len(record) > 2 else db",
        "    obj = _new(_model)",
        f"    obj.__dict__ = {{'_state': state, {items}}}",
        "    return obj",
    ])
    exec(compile(source, f"<datapipe cached {model._meta.label} row>", "exec"), env)
    return env["decode"]  # type: ignore[no-any-return]


def _decoding_lines(model: type[models.Model], names: tuple[str, ...], checked: bool,
                    env: dict[str, Any]) -> list[str]:
    """The generated decoder's first lines: the record's values unpacked into ``a0, a1...``,
    then each decoded where its field needs it (its decoder put in ``env`` as ``d<i>``), or,
    ``checked``, an integer field's float refused."""
    decoders = {c[0]: c[2] for c in _codecs(model)}
    kinds = {f.attname: _stored_kind(f) for f in model._meta.concrete_fields}
    lines = [f"    [{''.join(f'a{i}, ' for i in range(len(names)))}] = record[1]"]
    for i, name in enumerate(names):
        decode = decoders[name]  # KeyError: not a concrete field of the model
        if decode is not None:
            env[f"d{i}"] = decode
            lines.append(f"    if a{i} is not None: a{i} = d{i}(a{i})")
        elif checked and kinds[name] == "int":
            lines.append(f"    if a{i}.__class__ is float: raise _Wide({name!r})")
    return lines


def _dict_items(names: tuple[str, ...], tracked: tuple[str, ...]) -> str:
    """The items of the instance's ``__dict__`` literal: each attname's local (the last of a
    repeated name wins), and what remember_tenants records when ``tracked``."""
    local = {name: f"a{i}" for i, name in enumerate(names)}
    items = "".join(f"{name!r}: {var}, " for name, var in local.items())
    if tracked:
        seen = "".join(f"{a!r}: {local[a]}, " for a in tracked if a in local)
        items += f"_TENANTS: {{{seen}}}, "
    return items


def read_entry(model: type[models.Model], raw: str | bytes,
               accept: Callable[[dict[str, Any]], bool]
               ) -> tuple[dict[str, Any], list[models.Model]] | None:
    """An entry's JSON and its rows, or None when ``accept(entry)`` says it is not the one
    wanted (its rows are then not rebuilt). orjson reads it when :func:`_orjson_reads` allows;
    what orjson refuses or may misread (NaN, an integer past 64 bits) the standard library,
    which wrote the entry, reads again."""
    fast = _orjson_reads(model) and fast_build(model)
    if fast:
        try:
            data = orjson.loads(raw)
            if not accept(data):
                return None
            return data, _decode_generated(model, data["fs"], data["r"], data["db"],
                                           checked=True)
        except ValueError:  # orjson.JSONDecodeError, _WideInteger
            pass
    data = json.loads(raw)
    if not accept(data):
        return None
    return data, decode_rows(model, data["fs"], data["r"], data["db"])


_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


@lru_cache(maxsize=256)
def _plain_model(model: type[models.Model]) -> bool:
    """Whether ``Model.from_db`` on ``model`` amounts to storing the values in the instance's
    ``__dict__``: Django's own ``__init__`` and ``from_db``, and only Django's plain attribute
    descriptors on the fields (whose ``__set__``, if any, stores the value and nothing else),
    and an instance built by :func:`_record_decoder` that is what ``from_db`` builds, state
    included (:func:`_builds_like_from_db`: a feature check, whatever the Django version)."""
    if model.__init__ is not models.Model.__init__:
        return False
    if getattr(model.from_db, "__func__", None) is not getattr(models.Model.from_db, "__func__",
                                                               True):
        return False
    if not all(type(inspect.getattr_static(model, f.attname, None)) in _PLAIN_DESCRIPTORS
               for f in model._meta.concrete_fields):
        return False
    return _builds_like_from_db(model)


_PROBE_DB = "datapipe-probe"


def _builds_like_from_db(model: type[models.Model]) -> bool:
    """Whether the generated decoder and ``Model.from_db`` build the same instance from one
    probe record (every field None): same class, same ``__dict__`` and same ``_state``
    attributes. A Django whose ``from_db`` sets more (a fetch mode, say), or whose ``__init__``
    stores anything else, fails it, and its rows are built by ``from_db``. Called only while no
    ``pre_init``/``post_init`` receiver but the library's observes ``model``."""
    names = tuple(f.attname for f in model._meta.concrete_fields)
    try:
        ours = _record_decoder(model, names, ())([0, [None] * len(names)], _PROBE_DB)
        theirs = model.from_db(_PROBE_DB, list(names), [None] * len(names))
    except Exception:  # a model that cannot be built empty: take the safe path
        return False
    mine = {k: v for k, v in vars(ours).items() if k != "_state"}
    real = {k: v for k, v in vars(theirs).items() if k not in ("_state", LOADED_TENANTS)}
    return (type(ours) is type(theirs) and mine == real
            and vars(ours._state) == vars(theirs._state))


def _init_unobserved(model: type[models.Model]) -> bool:
    """No ``pre_init``/``post_init`` receiver for ``model`` but this library's tenant tracker."""
    if pre_init.has_listeners(model):
        return False
    if not post_init.has_listeners(model):
        return True
    try:
        live: Any = post_init._live_receivers(model)
    except Exception:  # an internal API: should it change, take the safe path
        return False
    sync, asynchronous = live if isinstance(live, tuple) else (live, [])
    return not asynchronous and all(r is remember_tenants for r in sync)


def fast_build(model: type[models.Model]) -> bool:
    """Whether nobody could tell ``Model.from_db`` from storing the values in a new instance
    built without ``__init__`` (a plain model, no ``pre_init``/``post_init`` receiver but this
    library's)."""
    return _init_unobserved(model) and _plain_model(model)
