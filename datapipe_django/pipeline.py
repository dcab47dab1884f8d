"""`Pipeline`: a declared read endpoint, executed stage by stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from datapipe_django import registry
from datapipe_django.chain import Attempt, FallbackMode
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers.base import BaseEnricher, Enricher, as_enricher, parent_path
from datapipe_django.enrichers.composite import CompositeEnricher
from datapipe_django.errors import PipelineError
from datapipe_django.fetchers.base import BaseFetcher, Fetcher, as_fetcher, missing_member
from datapipe_django.middleware import StageMiddleware, compose
from datapipe_django.observability import (
    CompleteMetrics,
    Metrics,
    Tracer,
    as_metrics,
    default_metrics,
    default_tracer,
    fallbacks,
    is_recording,
    pipeline_executed,
)
from datapipe_django.paging import RELEVANCE, Ordering
from datapipe_django.request import PipelineRequest
from datapipe_django.specs.paths import head, path_error
from datapipe_django.stages import DEFAULT_STAGES, Stage
from datapipe_django.state import State

__all__ = ["Pipeline"]


class _Unset:
    def __repr__(self) -> str:
        return "<from settings>"


UNSET: Any = _Unset()


class Pipeline:
    """A read endpoint as a pipeline: validate → fetch → transform → enrich → build.

    ``name`` is unique (the pipeline registers itself; see :mod:`datapipe_django.registry`).
    ``fetchers`` are tried by priority (list order unless a fetcher sets ``priority``; lower
    first) according to ``fallback``. ``ordering`` is made total by appending the pk; clients
    may order by ``ordering_fields`` (default: the fields of ``ordering``). ``timeout`` is one
    budget for the whole execution, in seconds (default ``DATAPIPE["TIMEOUT"]``; ``None``: no
    deadline). ``fail_fast=True`` turns an optional enricher's failure into a failed request.
    ``total=True`` counts every list's total unless the request says ``total=false`` (see
    :mod:`datapipe_django.totals`).

    Search: ``search_ordering="relevance"`` orders a request with ``q`` and no ``ordering`` by
    relevance (``ordering=relevance`` asks for it explicitly); ``facet_fields`` are the fields a
    request may count (``facets=status,mode``), listing at most ``facet_size`` values each;
    ``search_fuzziness`` (``"AUTO"`` or a number of edits) makes ``q`` tolerate typos on every
    source that can (the engine's fuzziness, trigram similarity on PostgreSQL).
    ``partial``: what a page that may lack rows (a source that could hold some was down, see
    docs/fetching.md) is: ``"flag"`` (default) serves it with ``result.partial`` true (the
    list body's ``"partial": true``), ``"error"`` fails it with ``SourcesUnavailable`` (503).
    """

    def __init__(
        self,
        name: str,
        *,
        model: type[models.Model],
        fetchers: Sequence[Fetcher],
        filterset_class: type[Any] | None = None,
        search_fields: Iterable[str] = (),
        tenant_field: str | None = None,
        ordering: Iterable[str] | None = None,
        ordering_fields: Iterable[str] | None = None,
        fallback: FallbackMode = FallbackMode.SEQUENTIAL,
        enrichers: Sequence[Enricher] = (),
        parallel_enrichment: bool = False,
        max_workers: int = 5,
        transformers: Sequence[Callable[[list[Any], State], Iterable[Any] | None]] = (),
        response_builder: Callable[[State], Any] | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        timeout: float | None = UNSET,
        fail_fast: bool = False,
        validators: Sequence[Callable[[PipelineRequest], None]] = (),
        middleware: Sequence[StageMiddleware] = (),
        total: bool = False,
        partial: str = "flag",
        register: bool = True,
        search_ordering: str | None = None,
        facet_fields: Iterable[str] = (),
        facet_size: int = 50,
        search_fuzziness: str | int | None = None,
    ) -> None:
        owner = f"Pipeline {name!r}"
        _check_arguments(owner, name=name, model=model, fallback=fallback, partial=partial,
                         max_workers=max_workers, timeout=timeout)
        _check_search_arguments(owner, search_ordering=search_ordering, facet_size=facet_size,
                                search_fuzziness=search_fuzziness)
        self.partial = partial
        self.name = name
        self.model = model
        self.filterset_class = filterset_class
        self.search_fields = tuple(search_fields)
        self.tenant_field = tenant_field
        self.fallback = fallback
        self.fetchers = self._check_fetchers(owner, fetchers)
        self.enrichers = self._check_enrichers(owner, enrichers)
        self.parallel_enrichment = parallel_enrichment
        self.max_workers = max_workers
        self.transformers = list(transformers)
        self.response_builder = response_builder
        # OpenTelemetry when its API is installed (no-op until an SDK is configured), else no-op.
        self.metrics: CompleteMetrics = (as_metrics(metrics) if metrics is not None
                                         else default_metrics())
        self.tracer: Tracer = tracer if tracer is not None else default_tracer()
        self._timeout = timeout
        self.fail_fast = fail_fast
        #: Whether a list counts its total when the request does not say (``?total=``).
        self.total = bool(total)
        self.validators = list(validators)
        self.middleware: list[StageMiddleware] = list(middleware)
        self.stages: list[Stage] = list(DEFAULT_STAGES)
        self.search_ordering = search_ordering
        self.facet_fields = _facet_fields(owner, model, facet_fields)
        self.facet_size = facet_size
        self.search_fuzziness = search_fuzziness
        _check_tenant_field(owner, model, tenant_field)
        self._set_ordering(owner, ordering, ordering_fields)
        if register:
            registry.register(self)
        for fetcher in self.fetchers:
            # Like Django's contribute_to_class: a fetcher that needs to know its pipeline
            # (CachedFetcher starts watching the model for writes) gets it here.
            fetcher.contribute_to_pipeline(self)

    # -- declaration checks -------------------------------------------------------------------
    def _set_ordering(self, owner: str, ordering: Iterable[str] | None,
                      ordering_fields: Iterable[str] | None) -> None:
        """``default_ordering`` (made total) and the ``ordering_fields`` clients may use."""
        model = self.model
        names = tuple(ordering) if ordering is not None else self._model_ordering(owner, model)
        self.default_ordering = Ordering.for_model(model, names, owner=owner)
        self.ordering_fields = frozenset(
            ordering_fields if ordering_fields is not None
            else (n.lstrip("-+") for n in names)
        ) | {"pk", model._meta.pk.name}  # type: ignore[union-attr]
        for error in ordering_errors(self, owner=f"{owner} `ordering_fields`"):
            raise error

    @staticmethod
    def _model_ordering(owner: str, model: type[models.Model]) -> tuple[str, ...]:
        names = tuple(model._meta.ordering or ())
        if not all(isinstance(n, str) for n in names):
            raise ImproperlyConfigured(
                f"{owner}: {model._meta.label}.Meta.ordering uses expressions. Pass "
                f"ordering=(...) field names to the Pipeline."
            )
        return tuple(str(n) for n in names) or ("pk",)

    @staticmethod
    def _check_fetchers(owner: str, fetchers: Sequence[Fetcher]) -> list[BaseFetcher]:
        if not fetchers:
            raise ImproperlyConfigured(f"{owner}: `fetchers` is empty. Give at least one, "
                                       f"e.g. fetchers=[ORMFetcher(using='default')].")
        checked = [_fetcher(owner, fetcher) for fetcher in fetchers]
        for message in duplicate_fetcher_names(checked):
            raise ImproperlyConfigured(f"{owner}: {message} Pass name='...' to tell them apart.")
        indexed = sorted(enumerate(checked), key=lambda p: (
            p[0] if p[1].priority is None else p[1].priority, p[0]))
        return [f for _, f in indexed]

    @staticmethod
    def _check_enrichers(owner: str, enrichers: Sequence[Enricher]) -> list[BaseEnricher]:
        checked = [_enricher(owner, enricher) for enricher in enrichers]
        seen: set[str] = set()
        for enricher in checked:
            if enricher.name in seen:
                raise ImproperlyConfigured(f"{owner}: two enrichers are named {enricher.name!r}.")
            seen.add(enricher.name)
        provided = {path for enricher in checked for path in enricher.paths()}
        for path in sorted(provided):
            parent = parent_path(path)
            if parent is not None and parent not in provided:
                raise ImproperlyConfigured(
                    f"{owner}: enricher {path!r} expands below {parent!r}, which no enricher "
                    f"expands. Declare one for {parent!r} too, e.g. PrefetchEnricher({parent!r})."
                )
        return checked

    # -- derived configuration -----------------------------------------------------------------
    @property
    def timeout(self) -> float | None:
        """The execution budget in seconds (read from settings at call time by default)."""
        if self._timeout is UNSET:
            value = datapipe_settings.TIMEOUT
            return float(value) if value is not None else None
        return self._timeout  # type: ignore[no-any-return]

    @cached_property
    def composite_enricher(self) -> CompositeEnricher:
        return CompositeEnricher(self.enrichers, parallel=self.parallel_enrichment,
                                 max_workers=self.max_workers)

    def expandable(self, auth_type: str | None) -> frozenset[str]:
        """The ``expand`` paths a caller of ``auth_type`` may ask for: those of the enrichers
        it may have (``always`` ones included), below parent paths it may have too."""
        allowed = {path for enricher in self.enrichers if enricher.can_enrich(auth_type)
                   for path in enricher.paths()}

        def reachable(path: str) -> bool:
            parent = parent_path(path)
            return parent is None or (parent in allowed and reachable(parent))

        return frozenset(path for path in allowed if reachable(path))

    # -- composition ---------------------------------------------------------------------------
    def use(self, *middleware: StageMiddleware) -> Pipeline:
        """Append stage middleware (innermost last). Returns the pipeline."""
        self.middleware.extend(middleware)
        return self

    def add_stage(self, stage: Callable[[State], None], *, name: str | None = None,
                  before: str | None = None, after: str | None = None) -> Pipeline:
        """Add a custom stage ``(state) -> None``; at the end unless ``before``/``after``."""
        stage_name = name or getattr(stage, "__name__", "") or f"stage{len(self.stages)}"
        if stage_name in self._stage_names():
            raise ImproperlyConfigured(f"Pipeline {self.name!r}: a stage named {stage_name!r} "
                                       f"exists already. Pass name='...'.")
        new = Stage(stage_name, stage)
        if before is None and after is None:
            self.stages.append(new)
        else:
            self.stages.insert(self._stage_position(before, after), new)
        return self

    def _stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def _stage_position(self, before: str | None, after: str | None) -> int:
        """Where a stage placed ``before`` (or else ``after``) a named stage goes."""
        anchor = before or after
        names = self._stage_names()
        if anchor not in names:
            raise ImproperlyConfigured(
                f"Pipeline {self.name!r}: no stage named {anchor!r}; stages are "
                f"{', '.join(names)}."
            )
        return names.index(anchor) + (0 if before else 1)

    # -- execution -----------------------------------------------------------------------------
    def execute(self, request: PipelineRequest | None = None, /, **kwargs: Any) -> Any:
        """Run ``request`` (or ``PipelineRequest(**kwargs)``) through every stage.

        Returns a :class:`~datapipe_django.PipelineResult` (or what ``response_builder``
        returns). Raises a :class:`~datapipe_django.errors.PipelineError` kind on failure.
        """
        if request is None:
            request = PipelineRequest(**kwargs)
        elif kwargs:
            request = request.replace(**kwargs)
        timeout = self.timeout
        state = State(pipeline=self, request=request,
                      deadline=time.monotonic() + timeout if timeout is not None else None)
        start = time.perf_counter()
        error: str | None = None
        raised: BaseException | None = None
        try:
            with self.tracer.span("datapipe.pipeline", {
                "datapipe.pipeline": self.name,
                "datapipe.operation": "retrieve" if request.pk is not None else "list",
            }) as span:
                for stage in self.stages:
                    self._run_stage(stage, state)
                if is_recording(span):
                    _describe_execution(span, state)
        except PipelineError as exc:
            error, raised = exc.code, exc
            raise
        except Exception as exc:
            error, raised = type(exc).__name__, exc
            raise
        finally:
            self._executed(state, time.perf_counter() - start, error, raised)
        return state.result

    def _executed(self, state: State, duration: float, error: str | None,
                  raised: BaseException | None) -> None:
        """An execution ended: the metrics' optional ``execution``, then the signal."""
        self.metrics.execution(self.name, duration, error)
        if pipeline_executed.has_listeners(self):
            pipeline_executed.send(sender=self, state=state, error=raised, duration=duration)

    def _run_stage(self, stage: Stage, state: State) -> None:
        handler = compose(stage.name, stage.run, self.middleware) if self.middleware \
            else stage.run
        start = time.perf_counter()
        error: str | None = None
        try:
            with self.tracer.span(f"datapipe.stage.{stage.name}",
                                  {"datapipe.pipeline": self.name, "datapipe.stage": stage.name}
                                  ) as span:
                try:
                    handler(state)
                finally:
                    if stage.name == "fetch":
                        self._observe_fetch(state, span)
        except PipelineError as exc:
            if exc.stage is None:
                exc.stage = stage.name
            error = exc.code
            raise
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            duration = time.perf_counter() - start
            state.timings[stage.name] = duration
            self.metrics.stage(self.name, stage.name, duration, error)

    def observe_attempt(self, attempt: Attempt) -> None:
        """Called by the fetch stage for every source considered."""
        self.metrics.source(self.name, attempt.source, attempt.outcome, attempt.duration)

    def _observe_fetch(self, state: State, span: Any) -> None:
        """Report the fetch's fallbacks (metrics) and what it did (the fetch stage's span)."""
        steps = fallbacks(state.attempts, [f.name for f in self.fetchers])
        for _, source, reason in steps:
            self.metrics.fallback(self.name, source, reason)
        if is_recording(span):
            self._describe_fetch(state, span, steps)

    def _describe_fetch(self, state: State, span: Any, steps: list[tuple[str, str, str]]
                        ) -> None:
        span.set_attribute("datapipe.fallback.mode", self.fallback.value)
        span.set_attribute("datapipe.item_count", len(state.items))
        span.set_attribute("datapipe.sources", list(state.sources))
        span.set_attribute("datapipe.fallback", bool(steps))
        if steps:
            span.set_attribute("datapipe.fallback.reason", steps[0][2])
            span.set_attribute("datapipe.fallback.detail", "; ".join(
                _attempt_detail(a) for a in state.attempts if a.outcome != "not_needed"))
        for attempt in state.attempts:
            if attempt.outcome in ("declined", "not_needed"):
                span.add_event(f"datapipe.source.{attempt.outcome}", {
                    "datapipe.source": attempt.source, "datapipe.reason": attempt.reason})

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} model={self.model._meta.label}>"



def _describe_execution(span: Any, state: State) -> None:
    """The pipeline span's attributes at the end of a recorded execution."""
    span.set_attribute("datapipe.item_count", len(state.items))
    span.set_attribute("datapipe.sources", list(state.sources))
    if state.remaining is not None:
        span.set_attribute("datapipe.deadline.remaining", state.remaining)


def _attempt_detail(attempt: Attempt) -> str:
    """``"replica: unavailable (lag 7.2 s)"``, ``"appdb: ok, 10 rows"``."""
    return (f"{attempt.source}: {attempt.outcome}"
            + (f" ({attempt.reason})" if attempt.reason else "")
            + (f", {attempt.count} rows" if attempt.outcome == "ok" else ""))


# -- declaration checks shared by the constructor and the system checks --------------------------

def _check_arguments(owner: str, *, name: Any, model: Any, fallback: Any, partial: Any,
                     max_workers: int, timeout: Any) -> None:
    if not name or not isinstance(name, str):
        raise ImproperlyConfigured("Pipeline: the first argument, `name`, must be a "
                                   "non-empty string that identifies the pipeline.")
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise ImproperlyConfigured(f"{owner}: `model` must be a Django model class, "
                                   f"got {model!r}.")
    problems = (
        (not isinstance(fallback, FallbackMode),
         "`fallback` must be a FallbackMode (SEQUENTIAL, FIRST_SUCCESS or PARALLEL)."),
        (partial not in ("flag", "error"),
         f"`partial` must be 'flag' (serve the page, marked partial) or 'error' (a 503), "
         f"not {partial!r}."),
        (max_workers < 1, "`max_workers` must be at least 1."),
        (timeout is not UNSET and timeout is not None and timeout <= 0,
         "`timeout` must be positive seconds or None."),
    )
    for bad, message in problems:
        if bad:
            raise ImproperlyConfigured(f"{owner}: {message}")


def _check_search_arguments(owner: str, *, search_ordering: Any, facet_size: int,
                            search_fuzziness: Any) -> None:
    fuzziness_ok = search_fuzziness in (None, "AUTO") or (
        isinstance(search_fuzziness, int) and 0 <= search_fuzziness <= 2)
    problems = (
        (search_ordering not in (None, RELEVANCE),
         f"`search_ordering` must be None or {RELEVANCE!r}, not {search_ordering!r}."),
        (facet_size < 1, "`facet_size` must be at least 1."),
        (not fuzziness_ok,
         f"`search_fuzziness` must be None, 'AUTO', 0, 1 or 2, not {search_fuzziness!r}."),
    )
    for bad, message in problems:
        if bad:
            raise ImproperlyConfigured(f"{owner}: {message}")


def _check_tenant_field(owner: str, model: type[models.Model], tenant_field: str | None
                        ) -> None:
    # Its first part only: the related models of a path may not be loaded yet when a pipeline
    # is declared; system check E007 follows the whole path (the same path_error).
    if tenant_field is not None and path_error(model, head(tenant_field)) is not None:
        raise ImproperlyConfigured(
            f"{owner}: `tenant_field` {tenant_field!r} is not a field of "
            f"{model._meta.label}. Name the field that holds the tenant.")


def _facet_fields(owner: str, model: type[models.Model], names: Iterable[str]
                  ) -> tuple[str, ...]:
    facets = tuple(names)
    for facet in facets:
        try:
            field = model._meta.get_field(facet)
        except FieldDoesNotExist:
            field = None
        if field is None or not field.concrete or field.many_to_many:
            raise ImproperlyConfigured(
                f"{owner}: facet field {facet!r} is not a concrete field of "
                f"{model._meta.label}. Count a local column (a foreign key counts its ids).")
    return facets


def ordering_errors(pipeline: Pipeline, *, owner: str | None = None
                    ) -> list[ImproperlyConfigured]:
    """Why a field of ``pipeline``'s ``ordering`` or ``ordering_fields`` cannot order its
    rows (not a concrete field of the model), one error per field: the constructor raises the
    first, system check E008 reports each (the attributes may change after construction)."""
    names = [f.name for f in pipeline.default_ordering.fields]
    errors = []
    for name in dict.fromkeys([*names, *sorted(pipeline.ordering_fields - {"pk"})]):
        try:
            Ordering.for_model(pipeline.model, [name], owner=owner or f"Pipeline {pipeline.name!r}")
        except ImproperlyConfigured as exc:
            errors.append(exc)
    return errors

def duplicate_fetcher_names(fetchers: Iterable[BaseFetcher]) -> list[str]:
    """One message per fetcher whose name an earlier one has (results, headers, traces and
    metrics could not tell them apart): the constructor raises it, system check E010 reports
    it when the list changed since."""
    seen: set[str] = set()
    messages = []
    for fetcher in fetchers:
        if fetcher.name in seen:
            messages.append(f"two fetchers are named {fetcher.name!r}; results, headers, "
                            f"traces and metrics could not tell them apart.")
        seen.add(fetcher.name)
    return messages


def _fetcher(owner: str, fetcher: Any) -> BaseFetcher:
    """One entry of ``fetchers``, checked (an instance with the required part of the protocol)
    and seen as a :class:`~datapipe_django.fetchers.BaseFetcher` (``as_fetcher``)."""
    if isinstance(fetcher, type):
        raise ImproperlyConfigured(
            f"{owner}: `fetchers` holds the class {fetcher.__name__}, not an instance. "
            f"Pass a fetcher object, e.g. {fetcher.__name__}(using='default')."
        )
    attr = missing_member(fetcher)
    if attr is not None:
        raise ImproperlyConfigured(
            f"{owner}: fetcher {fetcher!r} has no `{attr}`. A fetcher needs `name`, "
            f"`priority`, `can_handle(request)` and `fetch(request)`; subclass "
            f"datapipe_django.fetchers.BaseFetcher."
        )
    return as_fetcher(fetcher)


def _enricher(owner: str, enricher: Any) -> BaseEnricher:
    """One entry of ``enrichers``, checked (an instance with the required part of the protocol)
    and seen as a :class:`BaseEnricher` (:func:`~datapipe_django.enrichers.base.as_enricher`)."""
    if isinstance(enricher, type):
        raise ImproperlyConfigured(
            f"{owner}: `enrichers` holds the class {enricher.__name__}, not an instance. "
            f"Pass an enricher object, e.g. {enricher.__name__}('user')."
        )
    for attr in ("name", "required", "can_enrich", "enrich"):
        if not hasattr(enricher, attr):
            raise ImproperlyConfigured(
                f"{owner}: enricher {enricher!r} has no `{attr}`. Subclass "
                f"datapipe_django.enrichers.BaseEnricher."
            )
    return as_enricher(enricher)
