"""Cache keys for :class:`~datapipe_django.fetchers.cache.CachedFetcher`.

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
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return ["b", value]
    if kind is int:
        return value
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, bool):
        return ["b", bool(value)]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return ["f", repr(float(value))]
    if isinstance(value, decimal.Decimal):
        return ["D", str(value)]
    if isinstance(value, dt.datetime):
        return ["dt", value.isoformat()]
    if isinstance(value, dt.date):
        return ["d", value.isoformat()]
    if isinstance(value, dt.time):
        return ["t", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["td", value.days, value.seconds, value.microseconds]
    if isinstance(value, uuid.UUID):
        return ["u", value.hex]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["y", bytes(value).hex()]
    if isinstance(value, models.Model):
        if value.pk is None:
            raise Uncacheable(f"an unsaved {value._meta.label} instance")
        return ["M", value._meta.label_lower, canonical(value.pk)]
    if isinstance(value, list | tuple):
        return ["l", [canonical(v) for v in value]]
    if isinstance(value, set | frozenset):
        return ["s", sorted((canonical(v) for v in value), key=_json)]
    if isinstance(value, Mapping):
        items = [[canonical(k), canonical(v)] for k, v in value.items()]
        return ["m", sorted(items, key=lambda kv: _json(kv[0]))]
    return _canonical_object(value)


def _canonical_object(value: Any) -> Any:
    from datapipe_django.specs import Spec

    if isinstance(value, Spec):
        children = getattr(value, "children_specs", None)
        if dataclasses.is_dataclass(value):
            return ["S", class_path(value), [
                [f.name, canonical(getattr(value, f.name))] for f in dataclasses.fields(value)
            ]]
        if callable(children):
            return ["S", class_path(value), [canonical(c) for c in children()]]
    raise Uncacheable(f"no canonical form for a {class_path(value)} value")


def digest(value: Any, *, size: int = 64) -> str:
    """Hex SHA-256 of ``canonical(value)`` (first ``size`` hex digits)."""
    return hashlib.sha256(_json(canonical(value)).encode()).hexdigest()[:size]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def slug(text: str, *, limit: int = 40) -> str:
    """A readable, key-safe form of a name (memcached-safe: no spaces or control characters).

    Only for readability: keys also carry a digest, so two names with one slug never collide.
    """
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text and len(text) <= limit:
        return text
    return f"{cleaned[: limit - 9]}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"
