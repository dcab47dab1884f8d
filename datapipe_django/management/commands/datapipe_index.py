"""``manage.py datapipe_index``: search indices of django-elasticsearch-dsl and
django-opensearch-dsl Documents, rebuilt from a database.

::

    manage.py datapipe_index list
    manage.py datapipe_index rebuild [DOCUMENT ...] [--database ALIAS] [--batch-size N]
                                     [--in-place] [--no-pending]
    manage.py datapipe_index pending [DOCUMENT ...] [--database ALIAS] [--batch-size N]

``DOCUMENT`` is a Document's dotted path, class name or index name; by default every
registered Document (and every Document a pipeline's ``SearchFetcher`` reads). ``--database``
is the alias the rows are read from (default ``DATAPIPE["PRIMARY"]``).

``rebuild`` indexes every row in batches (one bulk request each, a progress bar on a
terminal) into a new index, switches the Document's index name to it atomically (an alias)
and deletes the index it replaces; ``--in-place`` drops and refills the index instead. Then
it re-indexes the rows marked pending on that database (``--no-pending``: not). ``pending``
only re-indexes the marked rows (writes the engine missed during an outage).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from datapipe_django.conf import datapipe_settings
from datapipe_django.inspect import DocumentInfo, describe_documents, known_documents
from datapipe_django.search.documents import adapter_for, document_label
from datapipe_django.search.indexing import Progress, process_pending, rebuild


def _matching(name: str, documents: list[type[Any]]) -> list[type[Any]]:
    """The Documents ``name`` designates (a dotted path, a class name or an index name)."""
    matches = [d for d in documents
               if name in (document_label(d), d.__name__, adapter_for(d).index)]
    if not matches:
        known = ", ".join(f"{d.__name__} ({adapter_for(d).index})" for d in documents)
        raise CommandError(f"Unknown Document {name!r}. Known: {known or 'none'}.")
    return matches


def select_documents(names: list[str]) -> list[type[Any]]:
    """The Documents ``names`` designate, in order, each once; every known one by default."""
    documents = known_documents()
    if not names:
        if not documents:
            raise CommandError("No Document is registered (django-elasticsearch-dsl or "
                               "django-opensearch-dsl) or read by a pipeline.")
        return documents
    chosen: list[type[Any]] = []
    for name in names:
        chosen.extend(m for m in _matching(name, documents) if m not in chosen)
    return chosen


def _document_line(info: DocumentInfo) -> str:
    size = "unreachable" if info["size"] is None else f"{info['size']:,} documents"
    pending = ", ".join(f"{count} on {alias!r}" for alias, count in info["pending"].items())
    return (f"{info['label']}: {info['flavor']} index {info['index']!r} ({info['where']}), "
            f"{size}, model {info['model']}; pending: {pending or 'none'}")


class Command(BaseCommand):
    help = "Search indices: list them, rebuild them from a database, re-index pending rows."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True,
                                        metavar="{list,rebuild,pending}")
        actions.add_parser("list", help="Documents, their indices, sizes and pending rows.")
        for action, text in (("rebuild", "Rebuild indices from a database."),
                             ("pending", "Re-index the rows marked pending.")):
            sub = actions.add_parser(action, help=text)
            sub.add_argument("documents", nargs="*", metavar="DOCUMENT",
                             help="Dotted path, class name or index name (default: all).")
            sub.add_argument("--database", default=None,
                             help="Database alias to read rows from (default: PRIMARY).")
            sub.add_argument("--batch-size", dest="batch_size", type=int, default=500,
                             help="Rows per bulk request (default 500).")
            if action == "rebuild":
                sub.add_argument("--in-place", dest="in_place", action="store_true",
                                 help="Drop and refill the index instead of swapping in a "
                                      "new one (searches fail over meanwhile).")
                sub.add_argument("--no-pending", dest="no_pending", action="store_true",
                                 help="Do not re-index the pending rows afterwards.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            self.list_documents()
            return
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        using = options["database"] or datapipe_settings.PRIMARY
        for document in select_documents(options["documents"]):
            self.index(document, using, options)

    def index(self, document: type[Any], using: str, options: dict[str, Any]) -> None:
        """Rebuild and/or re-index the pending rows of ``document``; a database or an engine
        that is down is a CommandError naming it."""
        try:
            if options["action"] == "rebuild":
                self.rebuild(document, using, options)
            if options["action"] == "pending" or not options.get("no_pending"):
                self.pending(document, using, options)
        except CommandError:
            raise
        except DatabaseError as exc:
            raise CommandError(f"{document.__name__}: database {using!r}: {exc}") from exc
        except Exception as exc:
            reason = adapter_for(document).unavailable_reason(exc)
            if reason is None:
                raise
            raise CommandError(f"{document.__name__}: the search engine is unavailable "
                               f"({reason}).") from exc

    def rebuild(self, document: type[Any], using: str, options: dict[str, Any]) -> None:
        adapter = adapter_for(document)
        self.stdout.write(f"Rebuilding {adapter.label} (index {adapter.index!r}) from "
                          f"database {using!r}")
        progress = Progress(adapter.index, stream=self.stderr)
        report = rebuild(document, using=using, batch_size=options["batch_size"],
                         swap=not options["in_place"],
                         progress=progress if options["verbosity"] else None)
        where = (f"{report.built!r}; {report.index!r} now points to it"
                 if report.built != report.index else f"{report.index!r}")
        replaced = f" (replaced {', '.join(report.replaced)})" if report.replaced else ""
        self.stdout.write(self.style.SUCCESS(
            f"Indexed {report.indexed:,} of {report.rows:,} rows into {where}{replaced} in "
            f"{report.seconds:.1f}s."))
        if report.failed:
            sample = "; ".join(f"{pk}: {why}" for pk, why in list(report.failed.items())[:3])
            raise CommandError(f"The engine refused {len(report.failed)} document(s): "
                               f"{sample}")

    def pending(self, document: type[Any], using: str, options: dict[str, Any]) -> None:
        adapter = adapter_for(document)
        report = process_pending(document, using=using, batch_size=options["batch_size"])
        self.stdout.write(f"Pending {adapter.label} on {using!r}: {report.processed} marked, "
                          f"{report.indexed} indexed, {report.deleted} deleted.")
        if report.failed:
            sample = "; ".join(f"{pk}: {why}" for pk, why in list(report.failed.items())[:3])
            raise CommandError(f"{len(report.failed)} pending row(s) were refused again "
                               f"(still marked): {sample}")

    def list_documents(self) -> None:
        for info in describe_documents():
            self.stdout.write(_document_line(info))
