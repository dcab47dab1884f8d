"""The five built-in stages: validate → fetch → transform → enrich → build.

A stage is a callable ``(state) -> None`` that reads and writes :class:`~datapipe_django.State`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError

from datapipe_django.chain import FetcherChain
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers.base import EnrichContext
from datapipe_django.errors import EnrichmentFailed, SourcesUnavailable, ValidationFailed
from datapipe_django.fetchers.base import FetchRequest
from datapipe_django.paging import RELEVANCE, Cursor, Ordering
from datapipe_django.request import parse_boolean, quote
from datapipe_django.specs import (
    MatchAll,
    Uncompilable,
    check_parameters,
    check_value,
    compile_filterset,
    model_field,
)
from datapipe_django.specs.parameters import storage_field
from datapipe_django.specs.paths import head
from datapipe_django.state import PipelineResult
from datapipe_django.totals import count_total

if TYPE_CHECKING:
    from datapipe_django.state import State

__all__ = ["Stage", "build", "enrich", "enrich_deadline", "fetch", "fetch_request", "load_fields",
           "tenant_value", "transform", "validate", "wants_total"]


@dataclass(frozen=True)
class Stage:
    """A named step of a pipeline."""

    name: str
    run: Callable[[State], None]


def _integer(raw: Any, name: str, errors: dict[str, list[str]], *, minimum: int,
             maximum: int | None = None) -> int | None:
    try:
        value = int(raw)
        if isinstance(raw, float | bool) or str(raw).strip() != str(value):
            raise ValueError
    except (TypeError, ValueError):
        errors[name] = ["A whole number is required."]
        return None
    if value < minimum:
        errors[name] = [f"Ensure this value is greater than or equal to {minimum}."]
        return None
    if maximum is not None and value > maximum:
        errors[name] = [f"Ensure this value is less than or equal to {maximum}."]
        return None
    return value


#: At most this many messages per parameter (the rest are counted).
MAX_MESSAGES = 5

#: What the enrichers leave of the request's deadline to build and send the response with: this
#: share of the pipeline's timeout, at most ``ENRICH_RESERVE_MAX`` seconds. An enricher still
#: running then is abandoned that much before the deadline (its loader's own timeout,
#: ``context.remaining``, ends there too), so a page that waited for it still answers within
#: the deadline on a busy machine, not a few tens of milliseconds after it.
ENRICH_RESERVE_SHARE = 0.02
ENRICH_RESERVE_MAX = 0.05


def _ordering(state: State, errors: dict[str, list[str]]) -> Ordering:
    pipeline = state.pipeline
    asked = state.request.ordering
    if not asked:
        if state.request.search and pipeline.search_ordering == RELEVANCE:
            return Ordering.by_relevance(pipeline.model)
        return pipeline.default_ordering
    if any(n.lstrip("-+") == RELEVANCE for n in asked) and \
            RELEVANCE not in pipeline.ordering_fields:
        why = _relevance_error(state, asked)
    else:
        why = _ordering_error(asked, pipeline.ordering_fields)
    if why:
        errors["ordering"] = [why]
        return pipeline.default_ordering
    if asked == (RELEVANCE,) and RELEVANCE not in pipeline.ordering_fields:
        return Ordering.by_relevance(pipeline.model)
    return Ordering.for_model(pipeline.model, asked, owner=f"Pipeline {pipeline.name!r}")


def _relevance_error(state: State, asked: tuple[str, ...]) -> str | None:
    """Why ``ordering=relevance`` (by the engine's score) cannot order this request."""
    if asked != (RELEVANCE,):
        return (f"{RELEVANCE!r} orders by itself (best first, the primary key breaking ties): "
                f"give it alone.")
    if not state.request.search:
        return f"Ordering by {RELEVANCE!r} needs a search: give q."
    if not state.pipeline.search_fields:
        return f"This endpoint cannot order by {RELEVANCE!r}: it has no free-text search."
    return None


def _ordering_error(asked: tuple[str, ...], allowed_names: Any) -> str | None:
    """Why the client's ordering fields cannot order this request (None: they can)."""
    if len(asked) > len(allowed_names):
        return f"Give at most {len(allowed_names)} ordering fields, not {len(asked)}."
    unknown = [n for n in asked if n.lstrip("-+") not in allowed_names]
    if unknown:
        allowed = ", ".join(sorted(allowed_names))
        return f"Unknown ordering field {quote(unknown[0])}. Allowed: {allowed}."
    seen = [n.lstrip("-+") for n in asked]
    if len(set(seen)) != len(seen):
        return "Give each ordering field once."
    return None


def _expand(state: State, errors: dict[str, list[str]]) -> frozenset[str]:
    pipeline = state.pipeline
    asked = state.request.expand
    known = {path for e in pipeline.enrichers for path in e.paths()}
    if len(asked) > max(len(known), 1):
        errors["expand"] = [f"Give at most {max(len(known), 1)} expansions, not {len(asked)}."]
        return frozenset()
    allowed = pipeline.expandable(state.request.auth_type)
    max_depth = int(datapipe_settings.MAX_EXPAND_DEPTH)
    result: set[str] = set()
    messages: list[str] = []
    for path in sorted(asked):
        why = _expansion_error(path, allowed, max_depth)
        if why:
            messages.append(why)
        else:
            parts = path.split(".")
            result.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    if messages:
        errors["expand"] = _at_most(messages)
    return frozenset(result)


def _expansion_error(path: str, allowed: Any, max_depth: int) -> str | None:
    if path.count(".") >= max_depth:
        return (f"{quote(path)} is nested deeper than {max_depth} "
                f"level{'' if max_depth == 1 else 's'}.")
    if path not in allowed:
        return f"Unknown expansion {quote(path)}."
    return None


def _at_most(messages: list[str]) -> list[str]:
    """The first ``MAX_MESSAGES`` messages, and how many more there are."""
    if len(messages) <= MAX_MESSAGES:
        return messages
    return [*messages[:MAX_MESSAGES], f"... and {len(messages) - MAX_MESSAGES} more."]


def _highlight(raw: Any, errors: dict[str, list[str]]) -> bool:
    if isinstance(raw, bool) or raw is None:
        return bool(raw)
    value = parse_boolean(str(raw))
    if value is None and str(raw).strip():
        errors["highlight"] = ["Must be a valid boolean (true or false)."]
    return bool(value)


def _facets(state: State, errors: dict[str, list[str]]) -> tuple[str, ...]:
    asked = state.request.facets
    allowed = state.pipeline.facet_fields
    if not asked:
        return ()
    if not allowed:
        errors["facets"] = ["This endpoint counts no facets."]
        return ()
    unknown = [name for name in asked if name not in allowed]
    if unknown:
        errors["facets"] = [f"Unknown facet {unknown[0][:100]!r}. Allowed: "
                            f"{', '.join(allowed)}."]
        return ()
    return asked


def _search(state: State, errors: dict[str, list[str]]) -> None:
    search = state.request.search
    if not search:
        return
    if not state.pipeline.search_fields:
        errors["q"] = ["This endpoint does not support free-text search."]
        return
    longest = int(datapipe_settings.SEARCH_MAX_LENGTH)
    most = int(datapipe_settings.SEARCH_MAX_TERMS)
    if "\x00" in search:
        errors["q"] = ["Null characters are not allowed."]
    elif len(search) > longest:
        errors["q"] = [f"Ensure this value has at most {longest} characters "
                       f"(it has {len(search)})."]
    elif len(search.split()) > most:
        errors["q"] = [f"Give at most {most} words (this has {len(search.split())})."]


def _key(pipeline: Any, path: str, raw: Any, name: str,
         errors: dict[str, list[str]]) -> Any:
    """``raw`` converted once by the model field at ``path`` (its ``to_python``), and checked
    against the databases' range; the raw value when it cannot be."""
    field = model_field(pipeline.model, path)
    if field is None:
        return raw
    storage = storage_field(field)
    try:
        value = storage.to_python(raw)
    except DjangoValidationError as exc:
        errors[name] = [quote_messages(exc)]
        return raw
    why = check_value(storage, value)
    if why:
        errors[name] = [why]
        return raw
    return value


def tenant_value(pipeline: Any, raw: Any, errors: dict[str, list[str]]) -> Any:
    """``raw`` as the pipeline's tenant field holds it (its ``to_python``), or an error under
    ``"tenant"`` when the field (or a database) cannot hold it."""
    return _key(pipeline, pipeline.tenant_field, raw, "tenant", errors)


def quote_messages(exc: DjangoValidationError) -> str:
    message = " ".join(str(m) for m in exc.messages)
    return message if len(message) <= 200 else f"{message[:100]}..."


def validate(state: State) -> None:
    """Check every parameter and compile the filters; nothing invalid goes further."""
    for validator in state.pipeline.validators:
        validator(state.request)
    errors: dict[str, list[str]] = {}
    _tenant(state, errors)
    state.expand = _expand(state, errors)
    if state.request.pk is not None:
        _retrieve_parameters(state, errors)
    else:
        _list_parameters(state, errors)
    if errors:
        raise ValidationFailed(errors)


def _tenant(state: State, errors: dict[str, list[str]]) -> None:
    """The tenant, converted once by the tenant field: every source, cache key and enricher
    sees it."""
    pipeline, request = state.pipeline, state.request
    if not pipeline.tenant_field:
        return
    if request.tenant is None:
        errors["tenant"] = ["A tenant is required for this pipeline."]
        return
    tenant = tenant_value(pipeline, request.tenant, errors)
    if "tenant" not in errors and tenant != request.tenant:
        state.request = request.replace(tenant=tenant)


def _retrieve_parameters(state: State, errors: dict[str, list[str]]) -> None:
    """A retrieve: the pk, converted by the pk field; one row, in the default ordering."""
    pipeline, request = state.pipeline, state.request
    pk = _key(pipeline, "pk", request.pk, "pk", errors)
    if "pk" not in errors and pk != request.pk:
        state.request = request.replace(pk=pk)
    state.limit, state.offset = 1, 0
    state.ordering = pipeline.default_ordering
    state.spec = MatchAll()


def _list_parameters(state: State, errors: dict[str, list[str]]) -> None:
    """A list: its page, ordering, search, highlight, facets, cursor and filters."""
    _page(state, errors)
    state.ordering = _ordering(state, errors)
    _search(state, errors)
    state.highlight = _highlight(state.request.highlight, errors)
    state.facets = _facets(state, errors)
    if state.request.cursor is not None and "ordering" not in errors:
        try:
            state.after = Cursor.decode(state.request.cursor, state.ordering,
                                        namespace=state.pipeline.name)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    _filters(state, errors)


def _page(state: State, errors: dict[str, list[str]]) -> None:
    """``limit`` and ``offset`` (or ``cursor``, not both)."""
    request = state.request
    limit = request.limit if request.limit is not None else datapipe_settings.DEFAULT_LIMIT
    state.limit = _integer(limit, "limit", errors, minimum=1,
                           maximum=int(datapipe_settings.MAX_LIMIT)) or 0
    if request.offset is not None and request.cursor is not None:
        errors["offset"] = ["Give either offset or cursor, not both."]
    elif request.offset is not None:
        state.offset = _integer(request.offset, "offset", errors, minimum=0,
                                maximum=datapipe_settings.MAX_OFFSET) or 0


def _filters(state: State, errors: dict[str, list[str]]) -> None:
    """The filters, bound to the FilterSet and compiled to ``state.spec`` (a filter that
    cannot be compiled leaves it None, naming the filter); an unknown or repeated parameter
    is an error, and then nothing is compiled."""
    pipeline = state.pipeline
    bad = check_parameters(pipeline.filterset_class, state.request.filters,
                           unknown=str(datapipe_settings.UNKNOWN_PARAMETERS))
    if bad:
        errors.update(bad)
        return
    try:
        state.spec = (
            compile_filterset(pipeline.filterset_class, state.request.filters)
            if pipeline.filterset_class is not None else MatchAll()
        )
    except ValidationFailed as exc:
        errors.update(exc.errors)
    except Uncompilable as exc:
        state.spec, state.uncompilable = None, exc.filter_name


def fetch_request(state: State) -> FetchRequest:
    """What the fetch stage asks the chain for, from a validated ``state`` (also used by
    ``manage.py datapipe explain``)."""
    pipeline, request = state.pipeline, state.request
    if state.ordering is None:
        raise ImproperlyConfigured(
            f"Pipeline {pipeline.name!r}: the fetch stage ran before validate. Keep the "
            f"built-in validate stage first when you add stages."
        )
    only = load_fields(state)
    return FetchRequest(
        request=request,
        model=pipeline.model,
        spec=state.spec,
        ordering=state.ordering,
        size=state.offset + state.limit + 1,
        after=state.after,
        search=request.search,
        search_fields=pipeline.search_fields,
        tenant_field=pipeline.tenant_field,
        tenant=request.tenant,
        pk=request.pk,
        deadline=state.deadline,
        pipeline=pipeline.name,
        uncompilable=state.uncompilable,
        select_related=_joins(state, narrowed=only is not None),
        only=only,
        total=wants_total(state),
        highlight=state.highlight and bool(request.search),
        facets=state.facets,
        facet_size=pipeline.facet_size,
        fuzziness=pipeline.search_fuzziness,
    )


def wants_total(state: State) -> bool:
    """Whether this execution counts its total: a list whose request says ``total=True``, or
    says nothing and the pipeline has ``total=True``."""
    request = state.request
    if request.pk is not None:
        return False
    return bool(state.pipeline.total if request.total is None else request.total)


def load_fields(state: State) -> tuple[str, ...] | None:
    """The model fields the sources load for this request (``FetchRequest.only``), or None
    for every field.

    ``request.only`` (the fields the response reads; the view derives it from ``fields`` and
    ``omit``) plus what the pipeline reads itself: the pk, the ordering keys (merging and the
    cursor), the tenant field, and the keys of the enrichers this request runs. None when the
    request does not narrow the fields, when one of those enrichers cannot say what it reads
    (``needs()`` returns None), or when the pipeline has ``transformers`` (they may read any
    field)."""
    pipeline, request = state.pipeline, state.request
    if request.only is None or pipeline.transformers:
        return None
    model = pipeline.model
    names = _concrete_names(model, request.only)
    enriched = _enricher_needs(state) if names is not None else None
    if names is None or enriched is None:
        return None
    names |= enriched | _pipeline_reads(state)
    concrete = {f.name for f in model._meta.concrete_fields}
    if names >= concrete:
        return None
    return tuple(sorted(names & concrete))


def _concrete_names(model: Any, only: Iterable[str]) -> set[str] | None:
    """The concrete model fields among ``only`` (None: one is not a model field at all)."""
    names: set[str] = set()
    for name in only:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            return None  # not a model field (a property, an annotation): load everything
        if getattr(field, "concrete", False):
            names.add(field.name)
    return names


def _pipeline_reads(state: State) -> set[str]:
    """The fields the pipeline reads itself: the pk, the ordering keys (merging and the
    cursor) and the tenant field."""
    pipeline = state.pipeline
    names = {pipeline.model._meta.pk.name}  # type: ignore[union-attr]
    if state.ordering is not None:
        names.update(f.name for f in state.ordering.fields)
    if pipeline.tenant_field:
        names.add(head(pipeline.tenant_field))
    return names


def _enricher_needs(state: State) -> set[str] | None:
    """The fields the enrichers this request runs read (None: one cannot say)."""
    pipeline = state.pipeline
    names: set[str] = set()
    for enricher in pipeline.composite_enricher.select(state.expand, state.request.auth_type):
        needed = enricher.needs(pipeline.model)
        if needed is None:
            return None
        names.update(needed)
    return names


def _joins(state: State, *, narrowed: bool = False) -> tuple[str, ...]:
    """The ``select_related`` paths of the joining enrichers this request runs: those with
    ``join=True``, and unless the request ``narrowed`` the rows' fields, those with
    ``join=None`` (a ``PrefetchEnricher``'s default)."""
    pipeline = state.pipeline
    joining = [e for e in pipeline.enrichers if e.join or (e.join is None and not narrowed)]
    if not joining:
        return ()
    selected = {id(e) for e in
                pipeline.composite_enricher.select(state.expand, state.request.auth_type)}
    return tuple(path for e in joining
                 if id(e) in selected and (path := e.join_path(pipeline.model)))


def fetch(state: State) -> None:
    """Run the fetcher chain; fill items, has_more, sources and attempts."""
    pipeline = state.pipeline
    asked = fetch_request(state)
    chain = FetcherChain(pipeline.fetchers, pipeline.fallback,
                         on_attempt=pipeline.observe_attempt, tracer=pipeline.tracer)
    result = chain.run(asked, offset=state.offset, limit=state.limit, attempts=state.attempts)
    state.items, state.has_more = result.items, result.has_more
    state.sources, state.attempts = result.sources, result.attempts
    state.partial = result.partial
    if result.partial and pipeline.partial == "error":
        unavailable = {a.source: a.reason for a in result.attempts
                       if a.outcome in ("unavailable", "timeout")}
        raise SourcesUnavailable(
            "The page may lack rows: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()),
            reasons=unavailable, stage="fetch")
    if asked.total:
        state.total = count_total(chain, asked, result)
    if state.facets:
        state.facet_counts = _facet_counts(state)


def _facet_counts(state: State) -> dict[str, list[dict[str, Any]]]:
    """The counts the source that served the page reported (one source serves a facets
    request: the fetchers that can count answer it completely)."""
    for attempt in state.attempts:
        counts = attempt.meta.get("facets") if attempt.outcome == "ok" else None
        if counts is not None and attempt.source in state.sources:
            return {name: [{"value": value, "count": count}
                           for value, count in counts.get(name, ())]
                    for name in state.facets}
    # The serving source answered no row and reported nothing (a custom fetcher): no counts.
    return {name: [] for name in state.facets}


def transform(state: State) -> None:
    """Apply the pipeline's ``transformers`` (``(items, state) -> items``) in order."""
    for transformer in state.pipeline.transformers:
        items = transformer(state.items, state)
        if items is not None:
            state.items = list(items)


def enrich(state: State) -> None:
    """Run the enrichers the request asked for (and the ``always`` ones) over the page."""
    pipeline, request = state.pipeline, state.request
    composite = pipeline.composite_enricher
    selected = composite.select(state.expand, request.auth_type)
    if not selected or not state.items:
        return
    context = EnrichContext(pipeline=pipeline.name, expand=state.expand,
                            auth_type=request.auth_type, tenant=request.tenant,
                            deadline=enrich_deadline(state), workers=pipeline.max_workers,
                            tracer=pipeline.tracer)
    errors = composite.run(state.items, context, selected, report=_reporter(state))
    if errors and pipeline.fail_fast:
        raise EnrichmentFailed(f"Enricher {errors[0]['enricher']!r} failed.", stage="enrich",
                               op=errors[0]["enricher"])
    state.errors.extend(errors)
    state.expand = _loaded(state.expand, selected, {error["enricher"] for error in errors})


def enrich_deadline(state: State) -> float | None:
    """The enrichers' deadline: the request's, less the reserve that builds the response
    (:data:`ENRICH_RESERVE_SHARE` of the timeout, at most :data:`ENRICH_RESERVE_MAX`)."""
    timeout = state.pipeline.timeout
    if state.deadline is None or timeout is None:
        return state.deadline
    return state.deadline - min(ENRICH_RESERVE_MAX, ENRICH_RESERVE_SHARE * float(timeout))


def _loaded(expand: frozenset[str], selected: Sequence[Any], failed: set[str]
            ) -> frozenset[str]:
    """From the enrich stage on, ``expand`` says what is loaded (serializers render exactly
    that): the ``always`` enrichers join it, failed ones and the paths below them leave it."""
    loaded = {path for e in selected if e.name not in failed for path in e.paths()}
    return frozenset(path for path in expand | loaded
                     if not any(path == f or path.startswith(f"{f}.") for f in failed))


def _reporter(state: State) -> Callable[[str, str, float], None]:
    """How the enrichers report each run: into ``state.enrichments`` and the pipeline's
    ``enricher`` metric."""
    pipeline = state.pipeline
    metric = pipeline.metrics.enricher

    def report(name: str, outcome: str, seconds: float) -> None:
        state.enrichments.append({"enricher": name, "outcome": outcome, "seconds": seconds})
        metric(pipeline.name, name, outcome, seconds)

    return report


def build(state: State) -> None:
    """Set ``next_cursor`` and the result (the pipeline's ``response_builder`` if any)."""
    pipeline = state.pipeline
    if state.has_more and state.items and state.ordering is not None:
        state.next_cursor = Cursor.encode(state.ordering, state.items[-1],
                                          namespace=pipeline.name)
    if pipeline.response_builder is not None:
        state.result = pipeline.response_builder(state)
    else:
        state.result = PipelineResult.from_state(state)


DEFAULT_STAGES = (
    Stage("validate", validate),
    Stage("fetch", fetch),
    Stage("transform", transform),
    Stage("enrich", enrich),
    Stage("build", build),
)
