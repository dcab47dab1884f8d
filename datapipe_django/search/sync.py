"""Search-index updates on transaction commit, in bulk, that never break a write.

Install it as the Document library's signal processor (one class serves both libraries)::

    ELASTICSEARCH_DSL_SIGNAL_PROCESSOR = "datapipe_django.search.sync.OnCommitSignalProcessor"
    OPENSEARCH_DSL_SIGNAL_PROCESSOR = "datapipe_django.search.sync.OnCommitSignalProcessor"

Compared with the libraries' ``RealTimeSignalProcessor``, which writes to the engine inside
``post_save``:

* **On commit.** A save or delete only marks (Document, pk) on the open transaction of its
  database alias. When that transaction commits, the rows are read again from the alias and
  written in one bulk request per Document. A rollback (of the transaction or of a savepoint)
  leaves no document behind (upstream django-elasticsearch-dsl#96): what is indexed is what
  committed; a row that is gone is deleted from the index. Outside a transaction
  (autocommit) the write goes out at once, as before.
* **In bulk.** ``bulk_create()`` and ``QuerySet.update()`` send no signals; pass their rows to
  :func:`index_later` and they join the same batch (one bulk request for all of them).
* **Outages never break a write.** When the engine is unreachable, times out, answers 5xx or
  rejects a document, the error is logged, counted (:func:`sync_stats`, and the OpenTelemetry
  counter ``datapipe.search.sync.failures`` when the API is installed) and each row is
  recorded in :class:`~datapipe_django.models.PendingIndex`, in the database it was written
  to. For ``DATAPIPE["SEARCH_SYNC_COOLDOWN"]`` seconds after an outage, writes skip the engine
  and are recorded directly. ``manage.py datapipe_index pending`` re-indexes them.
* ``Django.related_models`` and ``get_instances_from_related()`` work as upstream; a
  Document's ``ignore_signals`` and the libraries' ``*_AUTOSYNC`` settings are honoured.

A process that dies between the commit and the bulk request leaves documents stale without a
record; ``manage.py datapipe_index rebuild`` is the remedy for that (rare) case.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, connections, models, router
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from datapipe_django._internal import oncommit
from datapipe_django._internal.breaker import Breaker, Cooldown
from datapipe_django._internal.counters import Counters, otel_counter
from datapipe_django.conf import datapipe_settings
from datapipe_django.search.documents import (
    DocumentAdapter,
    adapter_for,
    registered_documents,
    related_documents,
)

__all__ = [
    "OnCommitSignalProcessor",
    "SyncReport",
    "index_later",
    "paused",
    "reset_cooldowns",
    "sync_stats",
    "write_documents",
]

logger = logging.getLogger("datapipe_django.search")

#: Documents per bulk request.
BULK_CHUNK = 1_000

_paused: ContextVar[bool] = ContextVar("datapipe_search_sync_paused", default=False)


@contextmanager
def paused() -> Iterator[None]:
    """Writes inside the block are not synced by the signal processor (this thread or task
    only): for bulk loads followed by ``manage.py datapipe_index rebuild``."""
    token = _paused.set(True)
    try:
        yield
    finally:
        _paused.reset(token)


class SyncStats(Counters):
    """What this process's index sync did (``sync_stats()``; reset with ``.reset()``):
    documents ``indexed`` and ``deleted``, ``failures`` (documents not written) and rows
    ``recorded`` in ``PendingIndex`` for re-index."""

    NAMES = ("indexed", "deleted", "failures", "recorded")
    indexed: int
    deleted: int
    failures: int
    recorded: int


_STATS = SyncStats()


def sync_stats() -> SyncStats:
    return _STATS


@dataclass
class SyncReport:
    """The outcome of :func:`write_documents`."""

    indexed: int = 0
    deleted: int = 0
    failed: dict[Any, str] = field(default_factory=dict)  # pk → why the engine refused it


# -- writing documents ---------------------------------------------------------------------

def _chunks(values: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def write_documents(adapter: DocumentAdapter, pks: Iterable[Any], *, using: str,
                    refresh: bool | None = None, timeout: float | None = None,
                    index: str | None = None) -> SyncReport:
    """Write the documents of ``pks`` as their rows are now on ``using``: index the rows
    the Document indexes, delete the others and those that no longer exist. One bulk request
    per :data:`BULK_CHUNK` documents. Raises the client's error when a request fails."""
    pk_field: Any = adapter.model._meta.pk
    wanted = list(dict.fromkeys(pk_field.to_python(pk) for pk in pks))
    found = _rows_now(adapter, wanted, using)
    missing = [pk for pk in wanted if pk not in found]
    ids = {str(adapter.document.generate_id(obj)): pk for pk, obj in found.items()}
    ids.update({str(pk): pk for pk in missing})
    report = SyncReport()
    refresh = adapter.auto_refresh if refresh is None else refresh
    objs = list(found.values())
    for start in range(0, max(len(objs), len(missing)), BULK_CHUNK):
        lines = adapter.actions(objs[start : start + BULK_CHUNK], index=index,
                                deleted=missing[start : start + BULK_CHUNK])
        response = adapter.bulk(lines, refresh=refresh, timeout=timeout)
        for item in response.get("items", []):
            _count_item(report, item, ids)
    return report


def _rows_now(adapter: DocumentAdapter, pks: list[Any], using: str) -> dict[Any, models.Model]:
    """pk → the row as it is now on ``using``, for those of ``pks`` the Document indexes."""
    found: dict[Any, models.Model] = {}
    for chunk in _chunks(pks, BULK_CHUNK):
        for obj in adapter.queryset(using).filter(pk__in=chunk):
            found[obj.pk] = obj
    return found


def _count_item(report: SyncReport, item: dict[str, Any], ids: dict[str, Any]) -> None:
    """Add one item of a bulk response to ``report``: indexed, deleted, or refused and why."""
    operation, result = next(iter(item.items()))
    pk = ids.get(str(result.get("_id")), result.get("_id"))
    if "error" in result:
        error = result["error"]
        report.failed[pk] = (f"{error.get('type')}: {error.get('reason')}"
                             if isinstance(error, dict) else str(error))[:255]
    elif operation == "delete":
        report.deleted += 1
    else:
        report.indexed += 1


# -- failures: counted, logged, recorded -------------------------------------------------

#: The breaker of each engine (flavor, connection alias): open for ``SEARCH_SYNC_COOLDOWN``
#: seconds after an outage, while writes skip the engine.
_breakers: dict[tuple[str, str | None], Breaker] = {}


def _sync_cooldown() -> float:
    return float(datapipe_settings.SEARCH_SYNC_COOLDOWN or 0)


def _breaker(adapter: DocumentAdapter) -> Breaker:
    key = (adapter.flavor, adapter.connection)
    found = _breakers.get(key)
    if found is None:
        found = _breakers.setdefault(key, Breaker(adapter.flavor, Cooldown(_sync_cooldown)))
    return found


def _cooling(adapter: DocumentAdapter) -> str | None:
    """Why writes skip the engine now (its last outage), or None."""
    breaker = _breakers.get((adapter.flavor, adapter.connection))
    if breaker is None or breaker.allow():
        return None
    return breaker.last_error


def _trip(adapter: DocumentAdapter, reason: str) -> None:
    _breaker(adapter).failed(reason)


def reset_cooldowns() -> None:
    """Forget recent outages: the next write tries the engine again."""
    _breakers.clear()


def _count_failures(adapter: DocumentAdapter, count: int, outcome: str) -> None:
    _STATS.add(failures=count)
    counter = otel_counter(
        "datapipe.search.sync.failures", unit="{document}",
        description="Documents the index sync could not write (marked for re-index).")
    if counter is not None:
        counter.add(count, {"datapipe.document": adapter.label, "datapipe.outcome": outcome})


def record_pending(adapter: DocumentAdapter, reasons: dict[Any, str], using: str) -> None:
    """Mark rows for re-index (once per Document and pk) in the database ``using``."""
    from datapipe_django.models import PendingIndex

    rows = [PendingIndex(document=adapter.label, object_pk=str(pk), reason=reason[:255])
            for pk, reason in reasons.items()]
    # A row already marked gets a new time, so a re-index that read it before this failure
    # keeps the mark (datapipe_index pending deletes only marks older than its read).
    unique: dict[str, Any] = {}
    if connections[using].features.supports_update_conflicts_with_target:
        unique["unique_fields"] = ["document", "object_pk"]
    try:
        PendingIndex.objects.using(using).bulk_create(
            rows, update_conflicts=True, update_fields=["reason", "created_at"], **unique)
    except DatabaseError:
        logger.exception("index sync: could not mark %s rows %s for re-index on %r; run "
                         "`manage.py datapipe_index rebuild`", adapter.model._meta.label,
                         sorted(map(str, reasons)), using)
        return
    _STATS.add(recorded=len(rows))


def _write(document: type[Any], pks: set[Any], using: str) -> None:
    """Write after commit. Never raises: the transaction is already committed, and an
    exception here would reach the code that committed it as if its write had failed."""
    adapter = adapter_for(document)
    skipped = _cooling(adapter)
    if skipped is not None:
        _count_failures(adapter, len(pks), "skipped")
        record_pending(adapter, dict.fromkeys(pks, f"engine skipped after: {skipped}"), using)
        return
    try:
        report = write_documents(adapter, pks, using=using,
                                 timeout=float(datapipe_settings.SEARCH_SYNC_TIMEOUT))
    except DatabaseError:
        _count_failures(adapter, len(pks), "database_error")
        logger.exception("index sync: could not read %s rows %s back from %r; their documents "
                         "are stale until `manage.py datapipe_index rebuild`",
                         adapter.model._meta.label, sorted(map(str, pks)), using)
        return
    except Exception as exc:  # any failure of the engine or of prepare(): see the docstring
        reason = adapter.unavailable_reason(exc)
        if reason is not None:
            _trip(adapter, reason)
            logger.warning("index sync: %s unavailable (%s); %d %s document(s) marked for "
                           "re-index", adapter.flavor, reason, len(pks), adapter.index)
            outcome = "unavailable"
        else:
            reason = f"{type(exc).__name__}: {exc}"
            logger.exception("index sync: writing %d %s document(s) failed; marked for "
                             "re-index", len(pks), adapter.index)
            outcome = "error"
        _count_failures(adapter, len(pks), outcome)
        record_pending(adapter, dict.fromkeys(pks, reason[:255]), using)
        return
    _STATS.add(indexed=report.indexed, deleted=report.deleted)
    if report.failed:
        logger.error("index sync: the engine refused %d %s document(s) (%s); marked for "
                     "re-index", len(report.failed), adapter.index,
                     next(iter(report.failed.values())))
        _count_failures(adapter, len(report.failed), "refused")
        record_pending(adapter, report.failed, using)


# -- batching per transaction ----------------------------------------------------------------

class _Batch:
    """The (Document, pk) pairs one transaction on one alias wrote; called on its commit."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.keys: dict[type[Any], set[Any]] = defaultdict(set)

    def __call__(self) -> None:
        for document, pks in list(self.keys.items()):
            _write(document, pks, self.using)


def _pending_batch(using: str) -> _Batch:
    """The batch of the transaction open on ``using``, registered to run on its commit. A
    batch whose callback is gone was rolled back (the transaction or the savepoint it was
    registered in): a new one starts, the rows it named were not written."""
    batch, _ = oncommit.batch(using, lambda: _Batch(using), _is_batch)
    return batch


def _is_batch(callback: Any) -> bool:
    return isinstance(callback, _Batch)


def schedule(document: type[Any], pks: Iterable[Any], using: str) -> None:
    """Write ``document``'s documents of ``pks`` once the transaction on ``using`` commits
    (at once outside a transaction)."""
    pks = {pk for pk in pks if pk is not None}
    if not pks:
        return
    if not connections[using].in_atomic_block:
        _write(document, pks, using)
        return
    _pending_batch(using).keys[document].update(pks)


def index_later(objs: Any, *, using: str | None = None) -> None:
    """Index rows the ORM sent no signal for (``bulk_create``, ``QuerySet.update``): model
    instances or a queryset. They are written with the transaction's other changes, when it
    commits, in one bulk request per Document, whatever ``*_AUTOSYNC`` says."""
    if isinstance(objs, models.QuerySet):
        alias = using or objs.db
        for document in registered_documents(objs.model):
            schedule(document, objs.values_list("pk", flat=True), alias)
        return
    by_key: dict[tuple[type[models.Model], str], list[Any]] = defaultdict(list)
    for obj in objs:
        alias = using or obj._state.db or router.db_for_write(type(obj), instance=obj)
        by_key[(type(obj), alias)].append(obj.pk)
    for (model, alias), pks in by_key.items():
        for document in registered_documents(model):
            schedule(document, pks, alias)


# -- the signal processor -----------------------------------------------------------------

def _related_pks(document: type[Any], instance: models.Model) -> list[Any]:
    """The pks of ``document``'s rows ``instance`` is embedded in (upstream's
    ``get_instances_from_related``)."""
    getter = getattr(document(), "get_instances_from_related", None)
    if getter is None:
        return []
    try:
        related = getter(instance)
    except ObjectDoesNotExist:
        return []
    if related is None:
        return []
    if isinstance(related, models.Model):
        return [related.pk]
    if isinstance(related, models.QuerySet):
        return list(related.values_list("pk", flat=True))
    return [obj.pk for obj in related]


class OnCommitSignalProcessor:
    """Signal processor for django-elasticsearch-dsl and django-opensearch-dsl (see the
    module docstring). Connects once, however many libraries instantiate it."""

    _uid = "datapipe_django.search.sync"

    def __init__(self, connections: Any = None) -> None:
        self.setup()

    def setup(self) -> None:
        post_save.connect(self.handle_save, dispatch_uid=f"{self._uid}.save")
        post_delete.connect(self.handle_delete, dispatch_uid=f"{self._uid}.delete")
        pre_delete.connect(self.handle_pre_delete, dispatch_uid=f"{self._uid}.pre_delete")
        m2m_changed.connect(self.handle_m2m_changed, dispatch_uid=f"{self._uid}.m2m")

    def teardown(self) -> None:
        post_save.disconnect(dispatch_uid=f"{self._uid}.save")
        post_delete.disconnect(dispatch_uid=f"{self._uid}.delete")
        pre_delete.disconnect(dispatch_uid=f"{self._uid}.pre_delete")
        m2m_changed.disconnect(dispatch_uid=f"{self._uid}.m2m")

    @staticmethod
    def _synced(document: type[Any]) -> bool:
        adapter = adapter_for(document)
        return adapter.autosync_enabled() and not adapter.ignore_signals

    def changed(self, instance: models.Model, using: str | None,
                *, related: bool = True) -> None:
        """``instance`` was written on ``using``: its documents and those embedding it."""
        if _paused.get():
            return
        alias = using or instance._state.db or router.db_for_write(type(instance))
        for document in registered_documents(type(instance)):
            if self._synced(document):
                schedule(document, [instance.pk], alias)
        if related:
            for document in related_documents(type(instance)):
                if self._synced(document):
                    schedule(document, _related_pks(document, instance), alias)

    def handle_save(self, sender: Any, instance: models.Model, using: str | None = None,
                    **kwargs: Any) -> None:
        self.changed(instance, using)

    def handle_delete(self, sender: Any, instance: models.Model, using: str | None = None,
                      **kwargs: Any) -> None:
        self.changed(instance, using, related=False)  # related rows: in pre_delete

    def handle_pre_delete(self, sender: Any, instance: models.Model,
                          using: str | None = None, **kwargs: Any) -> None:
        # Before the row goes, while the rows that embed it can still be found.
        if _paused.get():
            return
        alias = using or instance._state.db or router.db_for_write(type(instance))
        for document in related_documents(type(instance)):
            if self._synced(document):
                schedule(document, _related_pks(document, instance), alias)

    def handle_m2m_changed(self, sender: Any, instance: models.Model, action: str,
                           model: type[models.Model] | None = None,
                           pk_set: set[Any] | None = None, using: str | None = None,
                           **kwargs: Any) -> None:
        if action not in ("post_add", "post_remove", "post_clear") or _paused.get():
            return
        self.changed(instance, using)
        if model is not None and pk_set:  # the rows on the other side changed too
            alias = using or instance._state.db or "default"
            for document in registered_documents(model):
                if self._synced(document):
                    schedule(document, pk_set, alias)
