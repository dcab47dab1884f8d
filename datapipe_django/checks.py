"""System checks over every registered pipeline (``manage.py check``)."""

from __future__ import annotations

import difflib
import itertools
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from datapipe_django.conf import DEFAULTS, datapipe_settings
from datapipe_django.paging import Ordering
from datapipe_django.registry import all_pipelines
from datapipe_django.specs.paths import path_error

__all__ = ["check_declarations", "check_pipelines"]


@checks.register("datapipe_django")
def check_pipelines(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001: a fetcher names an unknown database alias. E002: the FilterSet's model is not the
    pipeline's model. Enrichers check their own declaration (``enricher.check(pipeline)``):
    E004 to E006, E013."""
    messages: list[checks.CheckMessage] = []
    for pipeline in all_pipelines():
        for fetcher in pipeline.fetchers:
            using = getattr(fetcher, "using", None)
            if using is not None and using not in connections.settings:
                messages.append(checks.Error(
                    f"Pipeline {pipeline.name!r}: fetcher {fetcher.name!r} uses database alias "
                    f"{using!r}, which is not in settings.DATABASES.",
                    hint="Add the alias to DATABASES or fix the fetcher's `using`.",
                    obj=pipeline, id="datapipe_django.E001",
                ))
        for enricher in pipeline.enrichers:
            check = getattr(enricher, "check", None)
            if callable(check):
                messages.extend(check(pipeline))
        fs = pipeline.filterset_class
        fs_model = getattr(getattr(fs, "_meta", None), "model", None)
        if fs is not None and fs_model is not None and fs_model is not pipeline.model:
            messages.append(checks.Error(
                f"Pipeline {pipeline.name!r}: filterset_class {fs.__name__} filters "
                f"{fs_model._meta.label}, not the pipeline's model {pipeline.model._meta.label}.",
                hint="Use a FilterSet whose Meta.model is the pipeline's model.",
                obj=pipeline, id="datapipe_django.E002",
            ))
    return messages


# -- declarations that can go wrong after construction, and the DATAPIPE setting ----------------
#
# Ids (one list for the whole library; see docs/operations.md):
#   E001 fetcher database alias unknown      E002 FilterSet model differs
#   E003 (W003) cache fetchers' own checks  E004 enricher relation path unknown
#   E005 enricher database alias unknown     E006 PrefetchEnricher tenant_field unknown
#   E007 tenant_field unknown                E008 ordering field unknown
#   E009 search Document for another model   E010 two fetchers share a name
#   E011 DATAPIPE names an unknown database  W001 unknown DATAPIPE key
#   E012 (W012, W013) search fetchers' own checks (datapipe_django.fetchers.search): a field
#        the engine cannot serve (tenant, ordering, q), millisecond dates, unservable filters
#   E013 a BatchEnricher would overwrite a model field
#   W014 a SEQUENTIAL/FIRST_SUCCESS source before another declares neither holds nor
#        can_handle
#   W016 a routed PipelineViewSet of a tenant pipeline cannot find the tenant
#   E015 a method= filter without a spec hook   E016 a search_fields entry is not a field
#   W017 an enricher no ExpandableField renders (datapipe_django.rest.checks, routed viewsets)
#        (datapipe_django.rest.checks: no get_tenant() and no `tenant` on the user model)


def _document_model(document: Any) -> Any:
    """The model a django-elasticsearch-dsl / django-opensearch-dsl Document indexes."""
    for attr in ("django", "Django"):
        model = getattr(getattr(document, attr, None), "model", None)
        if model is not None:
            return model
    return None


def _fetchers_with_inner(fetchers: Any) -> Any:
    for fetcher in fetchers:
        yield fetcher
        inner = getattr(fetcher, "fetcher", None)
        if inner is not None:
            yield inner


@checks.register("datapipe_django")
def check_declarations(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E007 to E010, E015 and E016 on every registered pipeline (its attributes may have been
    changed after the constructor checked them), E011 and W001 on ``settings.DATAPIPE``."""
    messages: list[checks.CheckMessage] = []
    for pipeline in all_pipelines():
        owner = f"Pipeline {pipeline.name!r}"
        label = pipeline.model._meta.label
        if pipeline.tenant_field:
            why = path_error(pipeline.model, pipeline.tenant_field)
            if why:
                messages.append(checks.Error(
                    f"{owner}: tenant_field {pipeline.tenant_field!r} is not a field of {label}: "
                    f"{why}.",
                    hint="Name the field (or the path, with __) that holds the tenant, e.g. "
                         "tenant_field='merchant_id'.",
                    obj=pipeline, id="datapipe_django.E007",
                ))
        names = [f.name for f in pipeline.default_ordering.fields]
        for name in dict.fromkeys([*names, *sorted(pipeline.ordering_fields - {"pk"})]):
            try:
                Ordering.for_model(pipeline.model, [name], owner=owner)
            except ImproperlyConfigured as exc:
                messages.append(checks.Error(
                    str(exc).split(". ")[0] + ".",  # "Pipeline '...': ordering field '...' ..."
                    hint="Use concrete fields of the model in `ordering` and `ordering_fields` "
                         "(no relation paths: every source must sort by them alike).",
                    obj=pipeline, id="datapipe_django.E008",
                ))
        for fetcher in _fetchers_with_inner(pipeline.fetchers):
            document = getattr(fetcher, "document", None)
            indexed = _document_model(document) if document is not None else None
            if indexed is not None and indexed is not pipeline.model:
                messages.append(checks.Error(
                    f"{owner}: fetcher {fetcher.name!r} searches "
                    f"{getattr(document, '__name__', document)}, which "
                    f"indexes {indexed._meta.label}, not the pipeline's model {label}.",
                    hint=f"Give the fetcher a Document whose Django.model is {label}.",
                    obj=pipeline, id="datapipe_django.E009",
                ))
        seen: set[str] = set()
        for fetcher in pipeline.fetchers:
            if fetcher.name in seen:
                messages.append(checks.Error(
                    f"{owner}: two fetchers are named {fetcher.name!r}; results, headers, "
                    f"traces and metrics could not tell them apart.",
                    hint="Pass name='...' to one of them.",
                    obj=pipeline, id="datapipe_django.E010",
                ))
            seen.add(fetcher.name)
        messages.extend(_check_tiers(pipeline))
        messages.extend(_check_filters(pipeline, owner))
        for path in pipeline.search_fields:
            why = path_error(pipeline.model, path)
            if why:
                messages.append(checks.Error(
                    f"{owner}: search_fields entry {path!r} is not a field of {label}: {why}.",
                    hint="Name text fields of the model (or paths to them, with __), e.g. "
                         "search_fields=('narration', 'reference_id').",
                    obj=pipeline, id="datapipe_django.E016",
                ))
    messages.extend(_check_setting())
    return messages


def _check_tiers(pipeline: Any) -> list[checks.CheckMessage]:
    """W014: a SEQUENTIAL or FIRST_SUCCESS chain whose earlier source says nothing of what it
    holds, while a later source exists (the chain then trusts its pages as if it held every
    row, or as if its rows came first in every ordering)."""
    from datapipe_django.chain import FallbackMode, FetcherChain
    if pipeline.fallback is FallbackMode.PARALLEL:
        return []
    mirrors = FetcherChain(pipeline.fetchers, pipeline.fallback).mirrors()
    stores = [f for f in pipeline.fetchers if f.name not in mirrors]
    messages: list[checks.CheckMessage] = []
    for fetcher, later in itertools.pairwise(stores):
        if fetcher.declares_scope():
            continue
        messages.append(checks.Warning(
            f"Pipeline {pipeline.name!r}: fetcher {fetcher.name!r} declares neither `holds` nor "
            f"`can_handle`, and {later.name!r} comes after it in a "
            f"{pipeline.fallback.name} chain. If {fetcher.name!r} holds only some rows (the "
            f"recent ones, say), its pages are taken as the whole answer or topped up as if its "
            f"rows came first in every ordering: a client ordering (?ordering=-amount) or an "
            f"offset then gets wrong pages.",
            hint=f"Say what its store holds: {type(fetcher).__name__}(..., "
                 f"holds=Range('created_at', gte=...)) or a zero-argument callable returning one "
                 f"(a sliding window); the chain then plans every request from it "
                 f"(docs/fetching.md, Tiered sources). If it holds every row, say "
                 f"holds=MatchAll().",
            obj=pipeline, id="datapipe_django.W014",
        ))
    return messages


def _check_filters(pipeline: Any, owner: str) -> list[checks.CheckMessage]:
    """E015: a ``method=`` filter with no spec hook: no source can serve a request using it
    (every one declines it), so each such request would be a 400."""
    filterset = pipeline.filterset_class
    filters = getattr(filterset, "base_filters", None) or {}
    messages: list[checks.CheckMessage] = []
    for name, filter_ in filters.items():
        if getattr(filter_, "method", None) is None:
            continue
        if callable(getattr(filterset, f"spec_{name}", None)) or callable(
                getattr(filter_, "spec", None)):
            continue
        messages.append(checks.Error(
            f"{owner}: filter {name!r} of {filterset.__name__} uses method="
            f"{filter_.method!r} and has no spec, so no source can serve a request that uses "
            f"it (each such request is a 400).",
            hint=f"Define spec_{name}(self, name, value) on {filterset.__name__}, returning a "
                 f"datapipe_django.specs.Spec (e.g. Contains(name, value)), or give the filter "
                 f"a `spec` callable.",
            obj=pipeline, id="datapipe_django.E015",
        ))
    return messages


def _check_setting() -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    user = getattr(settings, "DATAPIPE", None) or {}
    if not isinstance(user, dict):
        return messages  # datapipe_settings raises ImproperlyConfigured on first use
    for key in sorted(set(user) - set(DEFAULTS)):
        close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
        messages.append(checks.Warning(
            f"settings.DATAPIPE has an unknown key {key!r}; it is ignored.",
            hint=f"Did you mean {close[0]!r}?" if close else
                 f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            obj="settings.DATAPIPE", id="datapipe_django.W001",
        ))
    aliases = [("PRIMARY", datapipe_settings.PRIMARY)]
    for key in ("REPLICAS", "ARCHIVES"):
        aliases += [(key, alias) for alias in getattr(datapipe_settings, key)]
    for key, alias in aliases:
        if alias not in connections.settings:
            messages.append(checks.Error(
                f"settings.DATAPIPE[{key!r}] names the database alias {alias!r}, which is not "
                f"in settings.DATABASES.",
                hint="Add the alias to DATABASES or remove it from DATAPIPE.",
                obj="settings.DATAPIPE", id="datapipe_django.E011",
            ))
    return messages
