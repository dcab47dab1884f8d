"""Cache keys for :class:`~datapipe_django.fetchers.cache.CachedFetcher` (and the values a
``BatchEnricher`` caches).

A key must be the same in every process and on every machine (``hash()`` is randomised per
process, so it is never used), must tell apart every two requests that can have different
answers, and must change when the shape of what is cached changes. Hence:

* :func:`canonical` turns a value into a JSON structure with a type tag wherever JSON alone
  would confuse two values (``1`` and ``"1"`` and ``True``, a ``date`` and its ISO string, a
  model instance and its pk). A value it does not know raises :class:`Uncacheable`, and the
  request is answered without the cache rather than under a key that might collide.
* :func:`digest` is the SHA-256 of the canonical JSON.
* :data:`CACHE_FORMAT` is the version of what the library writes; bumping it (a release that
  changes the entry format) makes every old entry unreachable.

This module imports Django only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.db import models

__all__ = ["CACHE_FORMAT", "Uncacheable", "canonical", "class_path", "digest", "slug"]

#: Version of the entry format and key layout. Part of every key.
CACHE_FORMAT = 1


class Uncacheable(Exception):
    """A request holds a value with no canonical form: it is served without the cache."""


def class_path(obj: Any) -> str:
    """``module.QualName`` of a class (or of an object's class)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def canonical(value: Any) -> Any:
    """A JSON-able, type-tagged form of ``value``: equal only for values that are the same.

    Plain ``str``, ``int`` and ``None`` stay as they are (JSON already tells them apart); every
    other type becomes ``[tag, ...]``. Sets and mappings are sorted, so their order never
    matters. Model instances become their label and pk; specifications their class and fields.
    """
    handler = _HANDLERS.get(type(value))
    if handler is not None:
        return handler(value)
    return _canonical_other(value)


def _order(value: Any) -> tuple[int, str]:
    """Sort key of canonical forms: strings by themselves, anything else by its JSON."""
    return (0, value) if type(value) is str else (1, _json(value))


def _sorted(values: Any) -> list[Any]:
    return sorted(values, key=_order)


def _mapping(value: Any) -> list[Any]:
    pairs = [[canonical(k), canonical(x)] for k, x in value.items()]
    pairs.sort(key=lambda pair: _order(pair[0]))
    return ["m", pairs]


_HANDLERS: dict[type, Any] = {
    type(None): lambda v: None,
    str: lambda v: v,
    int: lambda v: v,
    bool: lambda v: ["b", v],
    float: lambda v: ["f", repr(v)],
    decimal.Decimal: lambda v: ["D", str(v)],
    dt.datetime: lambda v: ["dt", v.isoformat()],
    dt.date: lambda v: ["d", v.isoformat()],
    dt.time: lambda v: ["t", v.isoformat()],
    dt.timedelta: lambda v: ["td", v.days, v.seconds, v.microseconds],
    uuid.UUID: lambda v: ["u", v.hex],
    bytes: lambda v: ["y", v.hex()],
    bytearray: lambda v: ["y", bytes(v).hex()],
    memoryview: lambda v: ["y", bytes(v).hex()],
    list: lambda v: ["l", [canonical(x) for x in v]],
    tuple: lambda v: ["l", [canonical(x) for x in v]],
    set: lambda v: ["s", _sorted(canonical(x) for x in v)],
    frozenset: lambda v: ["s", _sorted(canonical(x) for x in v)],
    dict: _mapping,
}

#: Subclasses of the types above are canonicalised as their base type (``SafeString`` is a
#: ``str``); an enum member as its value (a ``TextChoices`` member is the string stored).
_BASES = (bool, str, int, float, decimal.Decimal, dt.datetime, dt.date, dt.time, dt.timedelta,
          uuid.UUID, bytes, bytearray, list, tuple, set, frozenset, dict)


def _canonical_other(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, models.Model):
        if value.pk is None:
            raise Uncacheable(f"an unsaved {value._meta.label} instance")
        return ["M", value._meta.label_lower, canonical(value.pk)]
    for base in _BASES:
        if isinstance(value, base):
            return _HANDLERS[base](value)
    if isinstance(value, Mapping):
        return _HANDLERS[dict](dict(value))
    handler = _spec_handler(type(value))
    if handler is None:
        raise Uncacheable(f"no canonical form for a {class_path(value)} value")
    _HANDLERS[type(value)] = handler  # the next spec of this class goes straight there
    return handler(value)


def _spec_handler(cls: type) -> Any:
    """How to canonicalise a specification class: its path and its fields (a leaf, a dataclass)
    or its children (``And``, ``Or``, ``Not``); None for a class that is not a ``Spec``."""
    from datapipe_django.specs import Spec

    if not issubclass(cls, Spec):
        return None
    path = _spec_path(cls)
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
        return lambda v: ["S", path, [[n, canonical(getattr(v, n))] for n in names]]
    if callable(getattr(cls, "children_specs", None)):
        return lambda v: ["S", path, [canonical(c) for c in v.children_specs()]]
    return None


def _spec_path(cls: type) -> str:
    """The name of a specification class in keys: ``module.QualName``, except that the library's
    own leaves and nodes are ``datapipe_django.specs.QualName`` wherever inside
    :mod:`datapipe_django.specs` they are defined (their public path), so that moving one
    between the package's modules changes no key."""
    if cls.__module__.split(".")[:2] == ["datapipe_django", "specs"]:
        return f"datapipe_django.specs.{cls.__qualname__}"
    return class_path(cls)


def digest(value: Any, *, size: int = 64) -> str:
    """Hex SHA-256 of ``canonical(value)`` (first ``size`` hex digits)."""
    return hashlib.sha256(_json(canonical(value)).encode()).hexdigest()[:size]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@lru_cache(maxsize=1024)
def slug(text: str, *, limit: int = 40) -> str:
    """A readable, key-safe form of a name (memcached-safe: no spaces or control characters).

    Only for readability: keys also carry a digest, so two names with one slug never collide.
    """
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text and len(text) <= limit:
        return text
    return f"{cleaned[: limit - 9]}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"
