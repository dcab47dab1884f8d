"""One adapter over a django-elasticsearch-dsl or django-opensearch-dsl ``Document`` class.

Both libraries declare an index the same way (a ``Document`` subclass with an ``Index`` and a
``Django`` inner class), but their clients differ in how a timeout is passed, how a bulk body
is sent and which exceptions mean "the engine cannot answer". :class:`DocumentAdapter` hides
those differences, so the fetcher, the index sync and the rebuild command have one code path.

Which exceptions mean "the engine cannot answer" is decided by
:func:`datapipe_django.errors.unavailable_reason`, for both clients; reading a mapping or
preparing a document needs only the Document class itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from datapipe_django.errors import unavailable_reason
from datapipe_django.specs.search import FieldMap

__all__ = [
    "DocumentAdapter",
    "EmptyDocument",
    "adapter_for",
    "document_label",
    "registered_documents",
    "related_documents",
]

#: index.max_result_window when the Document's index settings do not say.
DEFAULT_MAX_RESULT_WINDOW = 10_000


class EmptyDocument(ImproperlyConfigured):
    """``Document.prepare(instance)`` returned ``{}`` for a Document that maps fields.

    django-elasticsearch-dsl 9.0 with elasticsearch-py 9.4 or newer does exactly that for
    every instance (django-elasticsearch-dsl#505): documents would be indexed empty and never
    match a filter. Pin ``elasticsearch<9.4`` (the ``elasticsearch`` extra does).
    """


def document_label(document: type[Any]) -> str:
    """``"app.documents.PayoutDocument"``: how pending re-index records name a Document."""
    return f"{document.__module__}.{document.__qualname__}"


def _flavor(document: type[Any]) -> str:
    for cls in document.__mro__:
        module = cls.__module__ or ""
        if module.startswith(("elasticsearch", "django_elasticsearch_dsl")):
            return "elasticsearch"
        if module.startswith(("opensearchpy", "django_opensearch_dsl")):
            return "opensearch"
    raise ImproperlyConfigured(
        f"{document!r} is not a django-elasticsearch-dsl or django-opensearch-dsl Document.")


class DocumentAdapter:
    """A Document class and the engine connection it uses (``connection``: the alias in the
    library's connections registry; None for the Document's own)."""

    def __init__(self, document: type[Any], connection: str | None = None) -> None:
        self.document = document
        self.connection = connection
        self.flavor = _flavor(document)

    # -- declaration ------------------------------------------------------------------------
    @property
    def model(self) -> type[models.Model]:
        django = getattr(self.document, "django", None) or getattr(self.document, "Django",
                                                                   None)
        model = getattr(django, "model", None)
        if model is None:
            raise ImproperlyConfigured(f"{self.document.__name__} has no Django.model.")
        return model  # type: ignore[no-any-return]

    @property
    def index(self) -> str:
        """The index (or alias) the Document reads and writes."""
        return str(self.document._index._name)

    @property
    def label(self) -> str:
        return document_label(self.document)

    def mapping(self) -> dict[str, Any]:
        return dict(self.document._doc_type.mapping.to_dict())

    def field_map(self, model: type[models.Model] | None = None,
                  names: dict[str, str] | None = None) -> FieldMap:
        analysis = (self.index_body().get("settings") or {}).get("analysis") or {}
        return FieldMap(self.mapping(), model=model or self.model, names=names,
                        normalizers=analysis.get("normalizer") or {})

    def index_body(self) -> dict[str, Any]:
        """Settings and mappings to create the index with."""
        body = dict(self.document._index.to_dict())
        body.setdefault("mappings", self.mapping())
        return body

    @property
    def max_result_window(self) -> int:
        index_settings = getattr(self.document._index, "_settings", {}) or {}
        for key in ("max_result_window", "index.max_result_window"):
            if key in index_settings:
                return int(index_settings[key])
        nested = index_settings.get("index")
        if isinstance(nested, dict) and "max_result_window" in nested:
            return int(nested["max_result_window"])
        return DEFAULT_MAX_RESULT_WINDOW

    @property
    def auto_refresh(self) -> bool:
        """Whether writes refresh the index (visible to searches at once), as the library
        says: ``Django.auto_refresh``, ``Index.auto_refresh``, then its ``*_AUTO_REFRESH``
        setting."""
        value = getattr(getattr(self.document, "django", None), "auto_refresh", None)
        if value is None:
            value = getattr(getattr(self.document, "Index", None), "auto_refresh", None)
        if value is None:
            if self.flavor == "elasticsearch":
                value = getattr(settings, "ELASTICSEARCH_DSL_AUTO_REFRESH", True)
            else:
                value = getattr(settings, "OPENSEARCH_DSL_AUTO_REFRESH", False)
        return bool(value)

    @property
    def ignore_signals(self) -> bool:
        django = getattr(self.document, "django", None) or getattr(self.document, "Django",
                                                                   None)
        return bool(getattr(django, "ignore_signals", False))

    def autosync_enabled(self) -> bool:
        name = ("ELASTICSEARCH_DSL_AUTOSYNC" if self.flavor == "elasticsearch"
                else "OPENSEARCH_DSL_AUTOSYNC")
        return bool(getattr(settings, name, True))

    # -- rows → documents -------------------------------------------------------------------
    def queryset(self, using: str) -> Any:
        """The Document's own ``get_queryset()`` (its select_related...) on ``using``."""
        doc = self.document()
        if self.flavor == "opensearch":
            return doc.get_queryset(alias=using)
        return doc.get_queryset().using(using)

    def actions(self, objs: Iterable[models.Model], *, index: str | None = None,
                deleted: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Bulk lines: an index operation per object the Document indexes (a delete for one it
        does not, per ``should_index_object``), a delete per pk in ``deleted``."""
        index = index or self.index
        doc = self.document()
        fields = bool(self.mapping().get("properties"))
        lines: list[dict[str, Any]] = []
        for obj in objs:
            doc_id = str(self.document.generate_id(obj))
            if not doc.should_index_object(obj):
                lines.append({"delete": {"_index": index, "_id": doc_id}})
                continue
            source = doc.prepare(obj)
            if fields and not source:
                raise EmptyDocument(
                    f"{self.document.__name__}.prepare({obj!r}) returned {{}} although the "
                    f"Document maps fields: with django-elasticsearch-dsl 9.0, elasticsearch-py "
                    f"9.4+ makes prepare() return {{}} (django-elasticsearch-dsl#505). Install "
                    f"'elasticsearch>=9,<9.4'.")
            lines.append({"index": {"_index": index, "_id": doc_id}})
            lines.append(source)
        for pk in deleted:
            lines.append({"delete": {"_index": index, "_id": str(pk)}})
        return lines

    # -- the engine ---------------------------------------------------------------------------
    def client(self) -> Any:
        return self.document._get_connection(self.connection)

    def search(self, body: dict[str, Any], *, timeout: float | None = None,
               index: str | None = None) -> dict[str, Any]:
        client = self.client()
        index = index or self.index
        if self.flavor == "elasticsearch":
            if timeout is not None:
                client = client.options(request_timeout=max(timeout, 0.001))
            return dict(client.search(index=index, body=body))
        kwargs = {"request_timeout": max(timeout, 0.001)} if timeout is not None else {}
        return dict(client.search(index=index, body=body, **kwargs))

    def bulk(self, lines: Sequence[dict[str, Any]], *, refresh: bool = False,
             timeout: float | None = None) -> dict[str, Any]:
        """One bulk request; the response (its ``items`` carry per-document errors)."""
        if not lines:
            return {"errors": False, "items": []}
        client = self.client()
        refresh_value = "true" if refresh else "false"
        if self.flavor == "elasticsearch":
            if timeout is not None:
                client = client.options(request_timeout=max(timeout, 0.001))
            return dict(client.bulk(operations=list(lines), refresh=refresh_value))
        kwargs = {"request_timeout": max(timeout, 0.001)} if timeout is not None else {}
        return dict(client.bulk(body=list(lines), refresh=refresh_value, **kwargs))

    def create_index(self, name: str, *, timeout: float | None = 30.0) -> None:
        self._call("indices.create", index=name, body=self.index_body(), timeout=timeout)

    def refresh(self, name: str | None = None) -> None:
        self._call("indices.refresh", index=name or self.index)

    def count(self, name: str | None = None) -> int:
        return int(self._call("count", index=name or self.index)["count"])

    def delete_index(self, name: str) -> None:
        self._call("indices.delete", index=name, ignore_status=(404,))

    def exists(self, name: str) -> bool:
        return bool(self._call("indices.exists", index=name))

    def aliased_indices(self, alias: str) -> list[str]:
        """The indices ``alias`` points to (empty when it is not an alias)."""
        response = self._call("indices.get_alias", name=alias, ignore_status=(404,))
        if not isinstance(response, dict) or "error" in response or "status" in response:
            return []
        return sorted(response)

    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        self._call("indices.update_aliases", body={"actions": actions})

    def cluster_health(self, *, timeout: float | None = None) -> dict[str, Any]:
        return dict(self._call("cluster.health", timeout=timeout))

    def _call(self, path: str, *, timeout: float | None = None,
              ignore_status: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """``client.<path>(**kwargs)`` with a request timeout and ignored statuses, both
        clients alike (``path``: ``"indices.create"``, ``"count"``...)."""
        target = self.client()
        if self.flavor == "elasticsearch":
            options: dict[str, Any] = {}
            if timeout is not None:
                options["request_timeout"] = timeout
            if ignore_status:
                options["ignore_status"] = ignore_status
            if options:
                target = target.options(**options)
        else:
            if timeout is not None:
                kwargs["request_timeout"] = timeout
            if ignore_status:
                kwargs["ignore"] = ignore_status
        for part in path.split("."):
            target = getattr(target, part)
        result = target(**kwargs)
        return getattr(result, "body", result)

    # -- errors ----------------------------------------------------------------------------
    def unavailable_reason(self, exc: BaseException) -> str | None:
        """Why ``exc`` means the engine cannot answer now (connection refused or lost, a
        timeout, a 5xx or 429, the index missing), or None when it is anything else (a bad
        query is a bug and propagates)."""
        return unavailable_reason(exc)

    def __repr__(self) -> str:
        return f"<DocumentAdapter {self.document.__name__} index={self.index!r} {self.flavor}>"


def adapter_for(document: Any, connection: str | None = None) -> DocumentAdapter:
    """The (cached) adapter of ``document`` (a Document class)."""
    return _adapter(document, connection)


@functools.lru_cache(maxsize=256)
def _adapter(document: Any, connection: str | None) -> DocumentAdapter:
    return DocumentAdapter(document, connection)


def registered_documents(model: type[models.Model] | None = None) -> list[type[Any]]:
    """Documents registered with django-elasticsearch-dsl and django-opensearch-dsl (when
    installed), for ``model`` or all; in a stable order."""
    found: list[type[Any]] = []
    for app, module in (("django_elasticsearch_dsl", "django_elasticsearch_dsl.registries"),
                        ("django_opensearch_dsl", "django_opensearch_dsl.registries")):
        if not apps.is_installed(app):
            continue
        registry = __import__(module, fromlist=["registry"]).registry
        found.extend(registry.get_documents([model] if model is not None else None))
    return sorted(set(found), key=document_label)


def related_documents(model: type[models.Model]) -> list[type[Any]]:
    """Registered Documents that list ``model`` in ``Django.related_models``."""
    found: list[type[Any]] = []
    for document in registered_documents():
        related = getattr(getattr(document, "django", None) or getattr(document, "Django",
                                                                       None),
                          "related_models", None) or ()
        if model in related:
            found.append(document)
    return found
