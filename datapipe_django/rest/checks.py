"""System checks of the routed ``PipelineViewSet`` classes (``manage.py check``).

W016: a viewset serves a pipeline with a ``tenant_field`` but has no way to find the tenant: it
does not override ``get_tenant()`` and the user model has no ``tenant`` (the default reads
``request.auth.tenant`` or ``request.user.tenant``), so every request would be refused (403).
Only viewsets reachable from ``ROOT_URLCONF`` are checked: those are the ones that can be known
here. At run time the viewset logs the same warning once when it refuses a request for it.

W017: an enricher of the pipeline loads a relation that no ``ExpandableField`` of the viewset's
serializer renders at that path: every request that expands it queries the relation, then
renders the plain field (an id) or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver

__all__ = ["check_viewsets", "no_tenant_hook", "routed_viewsets", "unrendered_expansions"]


def routed_viewsets(patterns: Any = None) -> Iterator[type[Any]]:
    """Every ``PipelineViewSet`` subclass routed in ``patterns`` (default: the root URLconf),
    each once."""
    from datapipe_django.rest.viewsets import PipelineViewSet

    seen: set[type[Any]] = set()
    stack = list(get_resolver().url_patterns if patterns is None else patterns)
    while stack:
        entry = stack.pop(0)
        if isinstance(entry, URLResolver):
            stack.extend(entry.url_patterns)
        elif isinstance(entry, URLPattern):
            cls = getattr(entry.callback, "cls", None)
            if isinstance(cls, type) and issubclass(cls, PipelineViewSet) and cls not in seen:
                seen.add(cls)
                yield cls


def no_tenant_hook(viewset: type[Any]) -> bool:
    """Whether ``viewset`` relies on the default ``get_tenant()`` while the user model has no
    ``tenant`` (then only a ``request.auth`` object with a ``tenant`` can supply one)."""
    from datapipe_django.rest.viewsets import PipelineViewSet

    if viewset.get_tenant is not PipelineViewSet.get_tenant:
        return False
    try:
        user_model = get_user_model()
    except ImproperlyConfigured:  # django.contrib.auth not installed: no user model
        return True
    return not hasattr(user_model, "tenant")


def unrendered_expansions(pipeline: Any, serializer_class: Any) -> list[str]:
    """The enricher paths of ``pipeline`` (``fund_account.contact``) that no ``ExpandableField``
    of ``serializer_class`` (nested through the expandable fields' serializers) renders."""
    from datapipe_django.rest.expand import ExpandableField

    missing = []
    for enricher in pipeline.enrichers:
        for path in enricher.paths():
            current = serializer_class
            for part in path.split("."):
                declared = getattr(current, "_declared_fields", {}) if current else {}
                field = declared.get(part)
                if not isinstance(field, ExpandableField):
                    missing.append(path)
                    break
                current = field.serializer_class
    return sorted(set(missing))


def check_viewsets() -> list[checks.CheckMessage]:
    """W016 and W017 (see the module's docstring); run by
    :func:`datapipe_django.checks.check_pipelines` when DRF is installed."""
    from datapipe_django.rest.viewsets import PipelineViewSet

    messages: list[checks.CheckMessage] = []
    for viewset in routed_viewsets():
        if viewset.get_pipeline is not PipelineViewSet.get_pipeline:
            continue  # the pipeline is chosen per request: nothing to know here
        pipeline = viewset.pipeline
        serializer_class = getattr(viewset, "serializer_class", None)
        if pipeline is not None and serializer_class is not None:
            for path in unrendered_expansions(pipeline, serializer_class):
                messages.append(checks.Warning(
                    f"{viewset.__module__}.{viewset.__qualname__}: pipeline {pipeline.name!r} "
                    f"has an enricher for {path!r}, but {serializer_class.__name__} renders no "
                    f"ExpandableField at {path!r}: expanding it queries the relation, then "
                    f"renders it as an id (or not at all).",
                    hint=f"Declare {path.rsplit('.', 1)[-1]} = ExpandableField(<Serializer>) on "
                         f"the serializer at that path, or remove the enricher.",
                    obj=viewset, id="datapipe_django.W017",
                ))
        if pipeline is None or not pipeline.tenant_field or not no_tenant_hook(viewset):
            continue
        messages.append(checks.Warning(
            f"{viewset.__module__}.{viewset.__qualname__} serves pipeline {pipeline.name!r}, "
            f"whose tenant_field is {pipeline.tenant_field!r}, but does not override "
            f"get_tenant() and the user model has no `tenant`: unless request.auth carries a "
            f"`tenant`, every request is refused (403).",
            hint="Override get_tenant() to return the caller's tenant (from the user, the "
                 "token or a header your gateway sets).",
            obj=viewset, id="datapipe_django.W016",
        ))
    return messages
