"""System checks (``manage.py check``): one loop over every registered pipeline.

Each part of a pipeline checks its own declaration: :func:`pipeline_messages` the pipeline's
own attributes (its FilterSet, tenant field, ordering, fetcher names, tiers, search fields),
each fetcher and enricher its ``check(pipeline)`` hook (declared with its default on
:class:`~datapipe_django.fetchers.BaseFetcher` and
:class:`~datapipe_django.enrichers.BaseEnricher`), and, with DRF installed, each routed
``PipelineViewSet`` its serializer and tenant hook (:mod:`datapipe_django.rest.checks`). Then
the ``DATAPIPE`` setting is checked. :data:`CHECKS` is the one table of the ids they emit;
docs/checks.md and docs/operations.md list exactly these (a test holds them to it).

The constructor of :class:`~datapipe_django.Pipeline` refuses most mistakes at once; the checks
also see what changed after construction, and what the constructor cannot (a nested tenant
path, the settings, the caches, the search mapping). Where both look at the same thing they
share one implementation (``pipeline.ordering_errors``, ``pipeline.duplicate_fetcher_names``,
``specs.paths.path_error``).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import connections

from datapipe_django.conf import DEFAULTS, datapipe_settings
from datapipe_django.registry import all_pipelines
from datapipe_django.specs.paths import path_error

if TYPE_CHECKING:
    from datapipe_django.pipeline import Pipeline

__all__ = ["CHECKS", "check_declarations", "check_pipelines", "pipeline_messages"]

#: Every system check id of the library, with what it finds. docs/checks.md and
#: docs/operations.md list exactly these ids, each with this meaning.
CHECKS: dict[str, str] = {
    "datapipe_django.W001": "settings.DATAPIPE has an unknown key",
    "datapipe_django.E001": "a fetcher's database alias is not in DATABASES",
    "datapipe_django.E002": "the filterset_class filters another model than the pipeline's",
    "datapipe_django.E003": "a CachedFetcher's (or a caching BatchEnricher's) cache alias is "
                            "not in CACHES",
    "datapipe_django.W003": "a CachedFetcher on a per-process cache (check --deploy)",
    "datapipe_django.E004": "a PrefetchEnricher path is not a relation of the model",
    "datapipe_django.E005": "a PrefetchEnricher's database alias is not in DATABASES",
    "datapipe_django.E006": "a PrefetchEnricher's tenant_field is not a field of the related "
                            "model",
    "datapipe_django.E007": "the pipeline's tenant_field is not a field path of the model",
    "datapipe_django.E008": "an ordering or ordering_fields field is not a concrete field of "
                            "the model",
    "datapipe_django.E009": "a SearchFetcher's Document indexes another model",
    "datapipe_django.E010": "two fetchers share a name",
    "datapipe_django.E011": "settings.DATAPIPE names a database alias not in DATABASES",
    "datapipe_django.E012": "a SearchFetcher's Document cannot serve the tenant field, an "
                            "ordering field or a search field",
    "datapipe_django.W012": "a DateTimeField the pipeline orders by is mapped as date "
                            "(milliseconds)",
    "datapipe_django.W013": "a filter or facet field the search Document cannot serve exactly",
    "datapipe_django.E013": "a BatchEnricher would overwrite a field of the model",
    "datapipe_django.E014": "PrefetchEnricher(join=True) on a relation that cannot be joined",
    "datapipe_django.W014": "a SEQUENTIAL or FIRST_SUCCESS source before another declares "
                            "neither holds nor can_handle",
    "datapipe_django.E015": "a method= filter of the FilterSet has no spec hook",
    "datapipe_django.E016": "a search_fields entry is not a field path of the model",
    "datapipe_django.W016": "a routed PipelineViewSet of a tenant pipeline cannot find the "
                            "caller's tenant",
    "datapipe_django.W017": "an enricher that no ExpandableField of the routed viewset's "
                            "serializer renders",
}


@checks.register("datapipe_django", checks.Tags.caches)
def check_pipelines(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every check of the library (:data:`CHECKS`, but the ``--deploy`` W003): each registered
    pipeline's own and its components' (:func:`pipeline_messages`), the routed viewsets'
    (with DRF installed), the ``DATAPIPE`` setting's. Registered with the ``caches`` tag too,
    for E003."""
    messages: list[checks.CheckMessage] = []
    for pipeline in all_pipelines():
        messages.extend(pipeline_messages(pipeline))
    if apps.is_installed("rest_framework"):
        from datapipe_django.rest.checks import check_viewsets

        messages.extend(check_viewsets())
    messages.extend(_check_setting())
    return messages


#: Kept for one release: :func:`check_pipelines` runs every check.
check_declarations = check_pipelines


@checks.register(checks.Tags.caches, deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W003 (``manage.py check --deploy``): a CachedFetcher on a per-process cache."""
    from datapipe_django.fetchers.cache import check_shared_cache

    return check_shared_cache()


def pipeline_messages(pipeline: Pipeline) -> list[checks.CheckMessage]:
    """The checks of one pipeline: its own attributes', then each fetcher's and each
    enricher's own ``check(pipeline)``."""
    messages = [m for check in _PIPELINE_CHECKS for m in check(pipeline)]
    for fetcher in pipeline.fetchers:
        messages.extend(fetcher.check(pipeline))
    for enricher in pipeline.enrichers:
        messages.extend(enricher.check(pipeline))
    return messages


# -- the pipeline's own attributes ---------------------------------------------------------------

def _error(pipeline: Pipeline, message: str, hint: str, *, id: str) -> checks.Error:
    return checks.Error(f"Pipeline {pipeline.name!r}: {message}", hint=hint, obj=pipeline, id=id)


def _filterset_model(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    fs = pipeline.filterset_class
    fs_model = getattr(getattr(fs, "_meta", None), "model", None)
    if fs is not None and fs_model is not None and fs_model is not pipeline.model:
        yield _error(pipeline,
                     f"filterset_class {fs.__name__} filters {fs_model._meta.label}, not the "
                     f"pipeline's model {pipeline.model._meta.label}.",
                     "Use a FilterSet whose Meta.model is the pipeline's model.",
                     id="datapipe_django.E002")


def _tenant_field(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    why = path_error(pipeline.model, pipeline.tenant_field) if pipeline.tenant_field else None
    if why:
        yield _error(pipeline,
                     f"tenant_field {pipeline.tenant_field!r} is not a field of "
                     f"{pipeline.model._meta.label}: {why}.",
                     "Name the field (or the path, with __) that holds the tenant, e.g. "
                     "tenant_field='merchant_id'.",
                     id="datapipe_django.E007")


def _ordering(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    from datapipe_django.pipeline import ordering_errors

    for exc in ordering_errors(pipeline):
        yield checks.Error(
            str(exc).split(". ")[0] + ".",  # "Pipeline '...': ordering field '...' ..."
            hint="Use concrete fields of the model in `ordering` and `ordering_fields` "
                 "(no relation paths: every source must sort by them alike).",
            obj=pipeline, id="datapipe_django.E008",
        )


def _fetcher_names(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    from datapipe_django.pipeline import duplicate_fetcher_names

    for message in duplicate_fetcher_names(pipeline.fetchers):
        yield _error(pipeline, message, "Pass name='...' to one of them.",
                     id="datapipe_django.E010")


def _tiers(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    """W014: a SEQUENTIAL or FIRST_SUCCESS chain whose earlier source says nothing of what it
    holds, while a later source exists (the chain then trusts its pages as if it held every
    row, or as if its rows came first in every ordering)."""
    from datapipe_django.chain import FallbackMode, FetcherChain

    if pipeline.fallback is FallbackMode.PARALLEL:
        return
    mirrors = FetcherChain(pipeline.fetchers, pipeline.fallback).mirrors()
    stores = [f for f in pipeline.fetchers if f.name not in mirrors]
    for fetcher, later in itertools.pairwise(stores):
        if fetcher.declares_scope():
            continue
        yield checks.Warning(
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
        )


def _method_filters(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    """E015: a ``method=`` filter with no spec hook: no source can serve a request using it
    (every one declines it), so each such request would be a 400."""
    filterset = pipeline.filterset_class
    if filterset is None:
        return
    for name, filter_ in (getattr(filterset, "base_filters", None) or {}).items():
        if getattr(filter_, "method", None) is None or callable(
                getattr(filterset, f"spec_{name}", None)) or callable(
                getattr(filter_, "spec", None)):
            continue
        yield _error(pipeline,
                     f"filter {name!r} of {filterset.__name__} uses method={filter_.method!r} "
                     f"and has no spec, so no source can serve a request that uses it (each "
                     f"such request is a 400).",
                     f"Define spec_{name}(self, name, value) on {filterset.__name__}, returning "
                     f"a datapipe_django.specs.Spec (e.g. Contains(name, value)), or give the "
                     f"filter a `spec` callable.",
                     id="datapipe_django.E015")


def _search_fields(pipeline: Pipeline) -> Iterable[checks.CheckMessage]:
    for path in pipeline.search_fields:
        why = path_error(pipeline.model, path)
        if why:
            yield _error(pipeline,
                         f"search_fields entry {path!r} is not a field of "
                         f"{pipeline.model._meta.label}: {why}.",
                         "Name text fields of the model (or paths to them, with __), e.g. "
                         "search_fields=('narration', 'reference_id').",
                     id="datapipe_django.E016")


_PIPELINE_CHECKS: tuple[Callable[[Pipeline], Iterable[checks.CheckMessage]], ...] = (
    _filterset_model, _tenant_field, _ordering, _fetcher_names, _tiers, _method_filters,
    _search_fields,
)


# -- the DATAPIPE setting ------------------------------------------------------------------------

def _check_setting() -> list[checks.CheckMessage]:
    """W001: an unknown key of ``settings.DATAPIPE``; E011: an alias it names is unknown."""
    user = getattr(settings, "DATAPIPE", None) or {}
    if not isinstance(user, dict):
        return []  # datapipe_settings raises ImproperlyConfigured on first use
    messages: list[checks.CheckMessage] = []
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
    messages.extend(checks.Error(
        f"settings.DATAPIPE[{key!r}] names the database alias {alias!r}, which is not in "
        f"settings.DATABASES.",
        hint="Add the alias to DATABASES or remove it from DATAPIPE.",
        obj="settings.DATAPIPE", id="datapipe_django.E011",
    ) for key, alias in aliases if alias not in connections.settings)
    return messages
