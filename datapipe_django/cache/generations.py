"""Generation tokens: invalidation on write.

Generations
    Each cached model has a *generation token* in the cache (``<prefix>:gen1:<app.model>``) and,
    when a pipeline over it has a local ``tenant_field``, one per tenant
    (``<prefix>:gen1:<app.model>:<field>:<digest of the tenant>``). A cache entry records the
    tokens it was computed under, read *before* its source was queried; it is served only while
    they are still current. A write replaces the tokens with new random ones, so every entry
    computed before it is dead at once, whatever its key, on every process that shares the cache.

When tokens change
    On ``post_save``, ``post_delete`` and ``m2m_changed`` of a watched model, after the
    transaction commits (``transaction.on_commit`` on the write's own database alias; at once in
    autocommit). A save replaces its tenant's token; a save that moves a row to another tenant,
    or whose old tenant is unknown, replaces the model's. Writes to the models a pipeline filters
    through (``owner__name``), to a parent of a multi-table-inheritance model, and deletes of
    the targets of ``SET_NULL`` foreign keys replace the model's token. Writes that send no
    signal (``QuerySet.update()``, ``bulk_create()``, ``bulk_update()``, raw SQL) must call
    :func:`invalidate`.

    Inside a transaction that wrote a watched model, reads of that model skip the cache (neither
    read nor written): they must see the transaction's own writes, and must not publish rows
    that may yet be rolled back.

Outages
    Token writes go through the cache alias's :class:`~datapipe_django.cache.guard.CacheGuard`.
    Token changes that could not be written are kept and written before this process reads that
    cache again.

This module uses Django's cache API only.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save, pre_save

from datapipe_django._internal import oncommit
from datapipe_django.cache.guard import get_guard
from datapipe_django.cache.keys import CACHE_FORMAT, Uncacheable, digest, slug
from datapipe_django.conf import datapipe_settings
from datapipe_django.specs.paths import local_attname

__all__ = [
    "LOADED_TENANTS",
    "generation_keys",
    "invalidate",
    "model_generation_key",
    "new_token",
    "pending_write",
    "remember_tenants",
    "tenant_attname",
    "tenant_attnames",
    "tenant_value",
    "watch",
    "write_pending",
]

logger = logging.getLogger("datapipe_django.cache")

_MISSING: Any = object()
#: Attribute names (in the instance ``__dict__``) for the tenant values a row was loaded with.
LOADED_TENANTS = _LOADED = "_datapipe_tenants"
_BEFORE = "_datapipe_tenants_before"


# -- generation keys ---------------------------------------------------------------------------

def new_token() -> str:
    return secrets.token_hex(8)


def _label(model: type[models.Model]) -> str:
    return model._meta.concrete_model._meta.label_lower  # type: ignore[union-attr]


def _prefix() -> str:
    return f"{datapipe_settings.CACHE_KEY_PREFIX}:gen{CACHE_FORMAT}"


def model_generation_key(model: type[models.Model]) -> str:
    """The key of ``model``'s generation token (every tenant)."""
    return f"{_prefix()}:{slug(_label(model), limit=80)}"


_suffixes: dict[tuple[str, type, Any], str] = {}


def _tenant_suffix(attname: str, value: Any) -> str:
    try:
        key = (attname, type(value), value)
        found = _suffixes.get(key)
    except TypeError:  # an unhashable value: no memo
        return f"{attname}:{digest(value, size=32)}"
    if found is None:
        if len(_suffixes) > 10_000:
            _suffixes.clear()
        found = _suffixes[key] = f"{attname}:{digest(value, size=32)}"
    return found


def _tenant_generation_key(model: type[models.Model], suffix: str) -> str:
    return f"{model_generation_key(model)}:{suffix}"


@lru_cache(maxsize=256)
def tenant_attname(model: type[models.Model], tenant_field: str | None) -> str | None:
    """The attribute holding the tenant on an instance, when ``tenant_field`` is a local
    concrete field (``merchant``, ``merchant_id``); None otherwise (``merchant__slug``)."""
    return local_attname(model, tenant_field)


def tenant_value(model: type[models.Model], attname: str, value: Any) -> Any:
    """``value`` as the tenant field's Python value: ``"1"`` and ``1`` are one tenant for an
    integer field, exactly as for the database query. Raises ``ValidationError``."""
    return _field(model, attname).to_python(value)


@lru_cache(maxsize=256)
def _field(model: type[models.Model], attname: str) -> Any:
    return model._meta.get_field(attname)


def generation_keys(
    model: type[models.Model], tenant_field: str | None, tenant: Any
) -> tuple[list[str], Any]:
    """The generation keys a read of ``model`` for ``tenant`` depends on, and the tenant as the
    tenant field's Python value (``Uncacheable`` when it is not a valid value)."""
    keys = [model_generation_key(model)]
    attname = tenant_attname(model, tenant_field)
    if attname is None or tenant is None:
        return keys, tenant
    try:
        value = tenant_value(model, attname, tenant)
    except (ValidationError, TypeError, ValueError) as exc:
        raise Uncacheable(f"tenant {tenant!r} is not a valid {attname}") from exc
    keys.append(_tenant_generation_key(model, _tenant_suffix(attname, value)))
    return keys, value


# -- what is watched ---------------------------------------------------------------------------

@dataclass
class _Watched:
    tenant_attnames: set[str] = field(default_factory=set)
    caches: set[str | None] = field(default_factory=set)


_lock = threading.RLock()
_watched: dict[type[models.Model], _Watched] = {}
#: dependency model → {watched model: True when only its deletes matter}
_dependents: dict[type[models.Model], dict[type[models.Model], bool]] = {}
_targets_cache: dict[type[models.Model], list[tuple[type[models.Model], str, bool]]] = {}
_connected = False


def _concrete(model: type[models.Model]) -> type[models.Model]:
    return model._meta.concrete_model or model


def watch(
    model: type[models.Model],
    *,
    tenant_field: str | None = None,
    cache: str | None = None,
    depends_on: Iterable[type[models.Model]] = (),
) -> None:
    """Replace ``model``'s generation tokens in cache ``cache`` (None: ``DATAPIPE["CACHE"]``)
    whenever it is written; per tenant when ``tenant_field`` is a local field. Writes to
    ``depends_on`` models replace ``model``'s token too. Idempotent.

    ``CachedFetcher`` calls this when its pipeline is declared.
    """
    model = _concrete(model)
    with _lock:
        _connect()
        entry = _watched.setdefault(model, _Watched())
        entry.caches.add(cache)
        attname = tenant_attname(model, tenant_field)
        if attname is not None and attname not in entry.tenant_attnames:
            entry.tenant_attnames.add(attname)
            post_init.connect(remember_tenants, sender=model, weak=False,
                              dispatch_uid=f"datapipe_django:init:{_label(model)}")
        for dep, delete_only in _dependencies(model, depends_on).items():
            if dep is model:
                continue
            mine = _dependents.setdefault(dep, {})
            mine[model] = mine.get(model, True) and delete_only
        _targets_cache.clear()


#: ``on_delete`` handlers whose deletes rewrite no row of ours without a signal.
_SIGNALLED_DELETES = (None, models.CASCADE, models.PROTECT, models.RESTRICT, models.DO_NOTHING)


def _dependencies(model: type[models.Model], depends_on: Iterable[type[models.Model]]
                  ) -> dict[type[models.Model], bool]:
    """The models whose writes change ``model``'s rows: ``depends_on``, its parents (multi-table
    inheritance) and, deletes only (True), the targets of its SET_NULL / SET_DEFAULT / SET(...)
    foreign keys, whose deletes rewrite our rows with a bulk UPDATE that sends no signal."""
    deps: dict[type[models.Model], bool] = {_concrete(m): False for m in depends_on}
    for parent in model._meta.get_parent_list():
        deps[_concrete(parent)] = False
    for f in model._meta.concrete_fields:
        on_delete = getattr(getattr(f, "remote_field", None), "on_delete", None)
        if f.many_to_one and on_delete not in _SIGNALLED_DELETES:
            deps.setdefault(_concrete(f.related_model), True)  # type: ignore[arg-type]
    return deps


def _connect() -> None:
    global _connected
    if _connected:
        return
    pre_save.connect(_on_pre_save, weak=False, dispatch_uid="datapipe_django:pre_save")
    post_save.connect(_on_save, weak=False, dispatch_uid="datapipe_django:post_save")
    post_delete.connect(_on_delete, weak=False, dispatch_uid="datapipe_django:post_delete")
    m2m_changed.connect(_on_m2m, weak=False, dispatch_uid="datapipe_django:m2m_changed")
    _connected = True


def _targets(sender: type[models.Model]) -> list[tuple[type[models.Model], str, bool]]:
    """(watched model, "self" | "dep", delete_only) for a signal's sender class."""
    found = _targets_cache.get(sender)
    if found is not None:
        return found
    with _lock:
        result: list[tuple[type[models.Model], str, bool]] = []
        meta = getattr(sender, "_meta", None)
        if meta is not None:
            lineage = [_concrete(sender), *(_concrete(p) for p in meta.get_parent_list())]
            for model in lineage:
                if model in _watched:
                    result.append((model, "self", False))
                for watched, delete_only in _dependents.get(model, {}).items():
                    result.append((watched, "dep", delete_only))
        _targets_cache[sender] = result
        return result


# -- signal receivers --------------------------------------------------------------------------

def tenant_attnames(model: type[models.Model]) -> tuple[str, ...]:
    """The tenant attributes whose loaded values are remembered for ``model``'s rows."""
    watched = _watched.get(_concrete(model))
    return tuple(sorted(watched.tenant_attnames)) if watched is not None else ()


def remember_tenants(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    """``post_init`` receiver: the tenant values a row was loaded with (to tell, when it is
    saved, whether it moved to another tenant)."""
    watched = _watched.get(_concrete(sender))
    if watched is None:
        return
    values = instance.__dict__
    values[_LOADED] = {a: values[a] for a in watched.tenant_attnames if a in values}


def _stored_tenants(instance: models.Model) -> dict[str, Any]:
    """The tenant values the row has in the database, as far as this instance knows: those
    it was loaded (or last saved) with. Empty for an instance built in memory (``Item(id=3)``):
    its values say nothing about the stored row."""
    if instance._state.adding:
        return {}
    return dict(instance.__dict__.get(_LOADED, {}))


def _on_pre_save(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    if not _targets(sender):
        return
    if instance._state.adding:
        instance.__dict__.pop(_BEFORE, None)
    else:
        instance.__dict__[_BEFORE] = _stored_tenants(instance)


def _instance_targets(
    model: type[models.Model], instance: models.Model, *, before: dict[str, Any] | None,
    update_fields: Any = None,
) -> set[tuple[type[models.Model], str | None]]:
    """Tokens to replace for a write of ``instance``: its tenants', or the model's when a
    tenant is unknown or changed. ``before`` None: the row is new (no previous tenant)."""
    attnames = _watched[model].tenant_attnames
    if not attnames:
        return {(model, None)}
    out: set[tuple[type[models.Model], str | None]] = set()
    values = instance.__dict__
    for attname in attnames:
        new = values.get(attname, _MISSING)
        old = new if before is None else before.get(attname, _MISSING)
        if update_fields is not None and not _written(model, attname, update_fields):
            new = old  # the tenant column was not written
        if new is _MISSING or old is _MISSING or old != new:
            return {(model, None)}
        try:
            value = tenant_value(model, attname, new)
        except (ValidationError, TypeError, ValueError):
            return {(model, None)}
        out.add((model, _tenant_suffix(attname, value)))
    return out


def _written(model: type[models.Model], attname: str, update_fields: Iterable[str]) -> bool:
    names = set(update_fields)
    return attname in names or model._meta.get_field(attname).name in names


def _on_save(sender: Any, instance: models.Model, created: bool = False, using: str = "default",
             update_fields: Any = None, **kwargs: Any) -> None:
    targets = _targets(sender)
    if not targets:
        return
    todo: set[tuple[type[models.Model], str | None]] = set()
    before = instance.__dict__.pop(_BEFORE, None)
    for model, kind, delete_only in targets:
        if kind == "self":
            known_before = None if created else (before if before is not None else {})
            todo |= _instance_targets(model, instance, before=known_before,
                                      update_fields=update_fields)
            _remember_saved_tenants(model, instance, update_fields)
        elif not delete_only:
            todo.add((model, None))
    _schedule(todo, using)


def _remember_saved_tenants(model: type[models.Model], instance: models.Model,
                            update_fields: Any) -> None:
    """What the row now holds, for this instance's next write: the tenant values it saved."""
    values = instance.__dict__
    stored = dict(values.get(_LOADED, {}))
    for attname in _watched[model].tenant_attnames:
        if attname in values and (update_fields is None
                                  or _written(model, attname, update_fields)):
            stored[attname] = values[attname]
    values[_LOADED] = stored


def _on_delete(sender: Any, instance: models.Model, using: str = "default",
               **kwargs: Any) -> None:
    targets = _targets(sender)
    if not targets:
        return
    todo: set[tuple[type[models.Model], str | None]] = set()
    for model, kind, _delete_only in targets:
        if kind == "self":
            todo |= _instance_targets(model, instance, before=_stored_tenants(instance))
        else:
            todo.add((model, None))
    _schedule(todo, using)


def _on_m2m(sender: Any, instance: Any, action: str = "", model: Any = None,
            using: str = "default", **kwargs: Any) -> None:
    if action not in {"post_add", "post_remove", "post_clear"}:
        return
    todo: set[tuple[type[models.Model], str | None]] = set()
    for cls in {type(instance), model, sender}:
        if not isinstance(cls, type) or not issubclass(cls, models.Model):
            continue
        for watched, kind, delete_only in _targets(cls):
            if kind == "self" and cls is type(instance):
                todo |= _instance_targets(watched, instance, before=_stored_tenants(instance))
            elif kind == "self" or not delete_only:
                todo.add((watched, None))
    _schedule(todo, using)


# -- replacing tokens --------------------------------------------------------------------------

class _Bump:
    """Replaces generation tokens when called (an ``on_commit`` callback)."""

    def __init__(self, targets: set[tuple[type[models.Model], str | None]]) -> None:
        self.targets = set(targets)
        self.done = False

    def models(self) -> set[type[models.Model]]:
        return {model for model, _ in self.targets}

    def __call__(self) -> None:
        self.done = True
        by_alias: dict[str, dict[str, str]] = {}
        for model, suffix in self.targets:
            key = (model_generation_key(model) if suffix is None
                   else _tenant_generation_key(model, suffix))
            for alias in _aliases(model):
                by_alias.setdefault(alias, {})[key] = new_token()
        for alias, mapping in by_alias.items():
            _write_tokens(alias, mapping)

    def __repr__(self) -> str:
        return f"<datapipe invalidation of {sorted(map(str, self.targets))}>"


def _aliases(model: type[models.Model]) -> set[str]:
    """The cache aliases holding ``model``'s tokens (those configured now: a fetcher naming an
    unknown alias is reported by the system check datapipe_django.E003)."""
    watched = _watched.get(model)
    configured = watched.caches if watched is not None and watched.caches else {None}
    names = {alias or str(datapipe_settings.CACHE) for alias in configured}
    return {name for name in names if name in settings.CACHES}


_pending: dict[str, set[str]] = {}
#: Per thread: ``deferred`` is true once a token change waited for a commit (see pending_write).
_local = threading.local()
_pending_lock = threading.Lock()


def _write_tokens(alias: str, mapping: dict[str, str]) -> None:
    guard = get_guard(alias)
    if guard.allow():
        try:
            caches[alias].set_many(mapping, timeout=None)
        except Exception as exc:
            guard.absorb(exc)
        else:
            guard.succeeded()
            return
    with _pending_lock:
        _pending.setdefault(alias, set()).update(mapping)
    logger.warning("Cache %r: %d generation token(s) could not be replaced; they will be "
                   "written before this process reads that cache again.", alias, len(mapping))


def write_pending(alias: str) -> None:
    """Write the token changes an outage held back (raises the cache's error if it fails)."""
    if not _pending:
        return
    with _pending_lock:
        keys = _pending.pop(alias, set())
    if not keys:
        return
    try:
        caches[alias].set_many({key: new_token() for key in keys}, timeout=None)
    except BaseException:
        with _pending_lock:
            _pending.setdefault(alias, set()).update(keys)
        raise
    logger.warning("Cache %r: wrote %d held-back generation token(s).", alias, len(keys))


def _schedule(targets: set[tuple[type[models.Model], str | None]], using: str | None) -> None:
    if not targets:
        return
    conn = connections[using or "default"]
    if not conn.in_atomic_block:
        _Bump(targets)()
        return
    # One callback per transaction level, however many rows it writes.
    bump, new = oncommit.batch(conn.alias, lambda: _Bump(targets), _live_bump,
                               newest_only=True, this_level=True)
    if new:
        _local.deferred = True
    else:
        bump.targets |= targets


def _live_bump(callback: Any) -> bool:
    return isinstance(callback, _Bump) and not callback.done


def pending_write(model: type[models.Model]) -> bool:
    """Whether a transaction open in this thread wrote ``model`` (its tokens change on commit)."""
    if not getattr(_local, "deferred", False):
        return False  # this thread never deferred a token change to a commit
    model = _concrete(model)
    deferred = False
    for conn in connections.all(initialized_only=True):
        for func in oncommit.waiting(conn):
            if _live_bump(func):
                deferred = True
                if model in func.models():
                    return True
    _local.deferred = deferred
    return False


def invalidate(model: type[models.Model], tenant: Any = None, *, using: str | None = None
               ) -> None:
    """Make every cached page of ``model`` (of ``tenant`` only, when given) unreachable.

    Call it after writes that send no signal: ``QuerySet.update()``, ``bulk_create()``,
    ``bulk_update()``, raw SQL. Inside a transaction on ``using``, the tokens change when it
    commits. With ``using=None`` they change now and again when every transaction open in this
    thread commits, so no reader can cache the old rows in between.

    ``tenant`` is a value of the tenant field of the model's pipelines (``merchant_id``); a
    tenant that is not valid for that field, or a model whose pipelines have no local tenant
    field, invalidates every tenant.
    """
    model = _concrete(model)
    targets: set[tuple[type[models.Model], str | None]] = set()
    watched = _watched.get(model)
    if tenant is None or watched is None or not watched.tenant_attnames:
        targets.add((model, None))
    else:
        for attname in watched.tenant_attnames:
            try:
                value = tenant_value(model, attname, tenant)
            except (ValidationError, TypeError, ValueError):
                targets = {(model, None)}
                break
            targets.add((model, _tenant_suffix(attname, value)))
    if using is not None:
        _schedule(targets, using)
        return
    _Bump(targets)()
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            _schedule(targets, conn.alias)

