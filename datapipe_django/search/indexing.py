"""Rebuild a search index from a database alias, and re-index the rows marked pending.

:func:`rebuild` builds a fresh index next to the live one (``<name>-<timestamp>``) from the
rows of a database alias, in batches (keyset pages by pk, one bulk request each), then
switches the Document's index name to it in one atomic alias update and deletes the index it
replaces, so searches never see a half-built index. ``swap=False`` rebuilds in place instead
(the index is dropped first; searches fail over meanwhile).

:func:`process_pending` re-indexes the rows :mod:`datapipe_django.search.sync` marked in
:class:`~datapipe_django.models.PendingIndex` and removes the marks it has served.

Writes made *while* a swap rebuild runs reach the old index only; run ``pending`` after it,
or rebuild while writes are quiet. ``manage.py datapipe_index`` runs both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from django.core.management.base import OutputWrapper
from django.utils import timezone

from datapipe_django.search.documents import DocumentAdapter, adapter_for
from datapipe_django.search.sync import write_documents

__all__ = ["PendingReport", "Progress", "RebuildReport", "process_pending", "rebuild"]

ProgressCallback = Callable[[int, int], None]


@dataclass
class RebuildReport:
    document: str
    index: str           # the name searches use (an alias after a swap rebuild)
    built: str           # the concrete index written
    rows: int = 0        # rows read from the database
    indexed: int = 0
    failed: dict[Any, str] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class PendingReport:
    document: str
    processed: int = 0
    indexed: int = 0
    deleted: int = 0
    failed: dict[Any, str] = field(default_factory=dict)


class Progress:
    """A one-line progress bar on a terminal (a line per tenth elsewhere)."""

    def __init__(self, label: str, *, stream: TextIO | OutputWrapper | None = None,
                 width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._tenth = -1

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        elapsed = time.monotonic() - self.start
        if self.tty:
            filled = int(share * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self._write(f"\r{self.label} [{bar}] {done:,}/{total:,} {share:4.0%} "
                        f"{elapsed:.1f}s" + ("\n" if done >= total else ""))
        elif int(share * 10) > self._tenth or done >= total:
            self._tenth = int(share * 10)
            self._write(f"{self.label}: {done:,}/{total:,} ({share:.0%}, {elapsed:.1f}s)\n")
        self.stream.flush()

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):  # a management command's stdout/stderr
            self.stream.write(text, ending="")
        else:
            self.stream.write(text)


def _build(adapter: DocumentAdapter, target: str, *, using: str, batch_size: int,
           timeout: float, progress: ProgressCallback | None, report: RebuildReport) -> None:
    queryset = adapter.queryset(using).order_by("pk")
    total = queryset.count()
    doc = adapter.document()
    for rows in _batches(queryset, batch_size):
        report.rows += len(rows)
        wanted = [row for row in rows if doc.should_index_object(row)]
        ids = {str(adapter.document.generate_id(row)): row.pk for row in wanted}
        response = adapter.bulk(adapter.actions(wanted, index=target), timeout=timeout)
        _record(response, ids, report)
        if progress is not None:
            progress(report.rows, max(total, report.rows))
    if progress is not None and report.rows == 0:
        progress(0, 0)


def _batches(queryset: Any, batch_size: int) -> Iterator[list[Any]]:
    """The rows of ``queryset`` (ordered by pk) in batches of ``batch_size``, keyset-paged."""
    last: Any = None
    while True:
        page = queryset.filter(pk__gt=last) if last is not None else queryset
        rows = list(page[:batch_size])
        if not rows:
            return
        last = rows[-1].pk
        yield rows


def _record(response: Mapping[str, Any], ids: Mapping[str, Any], report: RebuildReport) -> None:
    """Count a bulk response's indexed documents in ``report``, and its failures by row pk."""
    for item in response.get("items", []):
        _, result = next(iter(item.items()))
        if "error" not in result:
            report.indexed += 1
            continue
        error = result["error"]
        report.failed[ids.get(str(result.get("_id")), result.get("_id"))] = (
            f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict)
            else str(error))


def rebuild(document: type[Any], *, using: str = "default", batch_size: int = 500,
            connection: str | None = None, swap: bool = True,
            progress: ProgressCallback | None = None, timeout: float = 120.0) -> RebuildReport:
    """Index every row of ``document``'s queryset on the database alias ``using`` into a new
    index and make it the live one (see the module docstring)."""
    adapter = adapter_for(document, connection)
    name = adapter.index
    started = time.monotonic()
    target = f"{name}-{timezone.now():%Y%m%d%H%M%S%f}" if swap else name
    report = RebuildReport(document=adapter.label, index=name, built=target)
    if not swap:
        for old in adapter.aliased_indices(name) or [name]:
            adapter.delete_index(old)
    adapter.create_index(target)
    try:
        _build(adapter, target, using=using, batch_size=batch_size, timeout=timeout,
               progress=progress, report=report)
        adapter.refresh(target)
    except BaseException:
        if swap:
            adapter.delete_index(target)  # a half-built index must never go live
        raise
    if swap:
        report.replaced = _swap(adapter, name, target)
    report.seconds = time.monotonic() - started
    return report


def _swap(adapter: DocumentAdapter, alias: str, target: str) -> list[str]:
    """Point ``alias`` at ``target`` atomically; delete the indices of earlier rebuilds.
    Returns the indices replaced."""
    old = adapter.aliased_indices(alias)
    replaced: list[str] = []
    actions: list[dict[str, Any]] = [{"remove": {"index": index, "alias": alias}}
                                     for index in old]
    if not old and adapter.exists(alias):
        # A concrete index of that name (created by the library's own commands, or by an
        # in-place rebuild): it goes in the same atomic step.
        actions.append({"remove_index": {"index": alias}})
        replaced.append(alias)
    actions.append({"add": {"index": target, "alias": alias}})
    adapter.update_aliases(actions)
    for index in old:
        if index.startswith(f"{alias}-"):  # ours; an index someone else aliased is left
            adapter.delete_index(index)
            replaced.append(index)
    return replaced


def process_pending(document: type[Any], *, using: str = "default", batch_size: int = 500,
                    connection: str | None = None, timeout: float = 60.0,
                    progress: ProgressCallback | None = None) -> PendingReport:
    """Re-index the rows marked for ``document`` on ``using`` and delete those marks (a mark
    renewed by a write that failed after this read stays)."""
    from datapipe_django.models import PendingIndex

    adapter = adapter_for(document, connection)
    pk_field: Any = adapter.model._meta.pk
    report = PendingReport(document=adapter.label)
    marks = PendingIndex.objects.using(using).filter(document=adapter.label).order_by("id")
    total = marks.count()
    last_id = 0
    while True:
        batch = list(marks.filter(id__gt=last_id)[:batch_size])
        if not batch:
            break
        last_id = batch[-1].id
        read_at = timezone.now()
        result = write_documents(adapter, [m.object_pk for m in batch], using=using,
                                 refresh=adapter.auto_refresh, timeout=timeout)
        report.processed += len(batch)
        report.indexed += result.indexed
        report.deleted += result.deleted
        report.failed.update(result.failed)
        served = [m.id for m in batch if pk_field.to_python(m.object_pk) not in result.failed]
        PendingIndex.objects.using(using).filter(id__in=served, created_at__lte=read_at).delete()
        if progress is not None:
            progress(report.processed, max(total, report.processed))
    return report
