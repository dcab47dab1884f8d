"""`PipelineRequest`: what a caller asks a pipeline for, free of any HTTP or DRF object, and
the one translation of a query string into it (:func:`request_from_query`, built of
:data:`QUERY_PARAMETERS`, :func:`split_query` and :meth:`SplitQuery.to_request`), used by
``PipelineViewSet`` and by ``manage.py datapipe explain`` alike.

The query parameters a list or retrieve reads itself (``q``, ``ordering``, paging, ``expand``)
are declared once, in :data:`QUERY_PARAMETERS`; every other parameter belongs to the pipeline's
FilterSet, and a name that is neither is an unknown parameter (a 400, see
``DATAPIPE["UNKNOWN_PARAMETERS"]``). A feature that adds a parameter registers it there with
:func:`register_query_parameter` and reads it from :func:`split_query`'s answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from datapipe_django.errors import ValidationFailed

__all__ = [
    "QUERY_PARAMETERS",
    "PipelineRequest",
    "QueryParameter",
    "SplitQuery",
    "normalize_expand",
    "normalize_names",
    "normalize_ordering",
    "parameter_key",
    "parse_boolean",
    "parse_names",
    "query_parameters",
    "quote",
    "register_query_parameter",
    "request_from_query",
    "split_query",
]

#: What a name list (``expand=a, b``) may have around its names: spaces and tabs only, so that
#: a control character is a (bad) name, not nothing.
_BLANK = " \t"

#: How much of a client's value an error message quotes.
QUOTE_LIMIT = 100


def parameter_key(name: str) -> str:
    """A parameter's name as an error body's key: cut to about :data:`QUOTE_LIMIT`."""
    return name if len(name) <= QUOTE_LIMIT else f"{name[:QUOTE_LIMIT]}..."


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters: what an error message may echo."""
    text = str(value)
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


@dataclass(frozen=True)
class QueryParameter:
    """A query parameter the request translation reads itself (not a FilterSet field).

    ``name`` is its default name in the query string; ``view_attribute`` names the
    ``PipelineViewSet`` attribute that renames it (``search_param = "search"``), ``suffix``
    what follows the renamed name (``fields[]`` is ``fields_param`` + ``"[]"``). ``attribute``
    is the :class:`PipelineRequest` field it fills (empty for one read elsewhere, like DRF's
    ``format``). ``many``: it may be repeated (its values add up). ``retrieve``: a retrieve
    takes it too (every parameter is a list's). ``convert`` turns its value into the
    attribute's (``?total=yes`` → True) and raises ``ValueError`` with the client's message for
    a value it cannot take.
    """

    name: str
    attribute: str = ""
    view_attribute: str = ""
    many: bool = False
    retrieve: bool = False
    suffix: str = ""
    convert: Callable[[str], Any] | None = None


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_boolean(text: str) -> bool | None:
    """A query-string boolean: ``true``/``1``/``yes``/``on`` → True, ``false``/``0``/``no``/
    ``off`` → False (any case, blanks around), anything else → None."""
    value = text.strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def _boolean(text: str) -> bool:
    value = parse_boolean(text)
    if value is None:
        raise ValueError("Must be a valid boolean.")
    return value


#: The reserved query parameters, by default name: the one place that says which parameter
#: names a list and a retrieve accept besides the FilterSet's. Extend it with
#: :func:`register_query_parameter`.
QUERY_PARAMETERS: dict[str, QueryParameter] = {}


def register_query_parameter(parameter: QueryParameter) -> QueryParameter:
    """Declare a reserved query parameter (a feature's own, like ``highlight``)."""
    QUERY_PARAMETERS[parameter.name] = parameter
    return parameter


for _parameter in (
    QueryParameter("q", "search", "search_param"),
    QueryParameter("ordering", "ordering", "ordering_param"),
    QueryParameter("limit", "limit", "limit_param"),
    QueryParameter("offset", "offset", "offset_param"),
    QueryParameter("cursor", "cursor", "cursor_param"),
    QueryParameter("expand", "expand", many=True, retrieve=True),
    QueryParameter("expand[]", "expand", many=True, retrieve=True),
    # Sparse fieldsets (drf-flex-fields' names), on list and retrieve.
    QueryParameter("fields", "fields", "fields_param", many=True, retrieve=True),
    QueryParameter("fields[]", "fields", "fields_param", many=True, retrieve=True, suffix="[]"),
    QueryParameter("omit", "omit", "omit_param", many=True, retrieve=True),
    QueryParameter("omit[]", "omit", "omit_param", many=True, retrieve=True, suffix="[]"),
    # An exact total, highlighted search fields, facet counts (list only).
    QueryParameter("total", "total", "total_param", convert=_boolean),
    QueryParameter("highlight", "highlight", "highlight_param"),
    QueryParameter("facets", "facets", "facets_param", many=True),
):
    register_query_parameter(_parameter)


@dataclass
class SplitQuery:
    """A query string taken apart by :func:`split_query`.

    ``values`` maps each :class:`PipelineRequest` attribute to its raw value (a string, or a
    list for a ``many`` parameter); ``filters`` holds every other parameter (the FilterSet's);
    ``errors`` maps each bad parameter to its messages.
    """

    values: dict[str, Any] = field(default_factory=dict)
    filters: Any = None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def to_request(self, *, pk: Any = None, **given: Any) -> PipelineRequest:
        """The :class:`PipelineRequest` of these values: a list with the FilterSet's
        parameters as its filters or, with ``pk``, a retrieve of that row; ``given`` (the
        tenant, the auth type, ...) adds to them and wins over them."""
        if pk is not None:
            return PipelineRequest(pk=pk, **{**self.values, **given})
        return PipelineRequest(**{"filters": self.filters, **self.values, **given})


def split_query(params: Any, parameters: Mapping[str, QueryParameter], *, retrieve: bool = False,
                ignore_unknown: bool = False) -> SplitQuery:
    """Split ``params`` (a ``QueryDict``) into the reserved ``parameters`` (keyed by their name
    in this query string) and the FilterSet's parameters.

    An empty value is an absent one. A reserved parameter that is not ``many`` given twice is
    an error, and so is, on a retrieve, any parameter that it does not take (unless
    ``ignore_unknown``). The FilterSet's parameters are checked by the validate stage.
    """
    split = SplitQuery(filters=params.copy())
    for name, parameter in parameters.items():
        if name not in params:
            continue
        split.filters.pop(name, None)
        if not retrieve or parameter.retrieve:
            _read(split, name, parameter, params.getlist(name))
        elif not ignore_unknown:
            split.errors[name] = [_NOT_RETRIEVE]
    if retrieve:
        if not ignore_unknown:
            for name in list(split.filters)[:10]:
                split.errors[parameter_key(name)] = [_NOT_RETRIEVE]
        split.filters.clear()
    return split


_NOT_RETRIEVE = "A retrieve does not take this parameter."


def _read(split: SplitQuery, name: str, parameter: QueryParameter, given: list[str]) -> None:
    """Put a reserved parameter's values (``given``, empty ones dropped) in ``split``, or its
    error."""
    values = [v for v in given if v != ""]
    if len(values) > 1 and not parameter.many:
        split.errors[name] = ["Give this parameter once."]
    elif parameter.attribute and values:
        _take(split, name, parameter, values)


def _take(split: SplitQuery, name: str, parameter: QueryParameter, values: list[str]) -> None:
    """Put a parameter's values in ``split``: all of a ``many`` one's, else the one value,
    converted (or its error)."""
    if parameter.many:
        split.values.setdefault(parameter.attribute, []).extend(values)
    elif parameter.convert is None:
        split.values[parameter.attribute] = values[0]
    else:
        try:
            split.values[parameter.attribute] = parameter.convert(values[0])
        except ValueError as exc:
            split.errors[name] = [str(exc)]


def query_parameters(names: Mapping[str, str] | None = None, *,
                     ignored: Iterable[str] = ()) -> dict[str, QueryParameter]:
    """The reserved parameters keyed by their name in the query string: ``names`` renames
    them by their ``view_attribute`` (``{"search_param": "search"}``); ``ignored`` names are
    taken and left alone (DRF's ``format``)."""
    names = names or {}
    parameters: dict[str, QueryParameter] = {}
    for parameter in QUERY_PARAMETERS.values():
        renamed = names.get(parameter.view_attribute) if parameter.view_attribute else None
        parameters[parameter.name if renamed is None else renamed + parameter.suffix] = parameter
    for name in ignored:
        parameters[name] = QueryParameter(name, retrieve=True)
    return parameters


def request_from_query(params: Any, parameters: Mapping[str, QueryParameter] | None = None, *,
                       pk: Any = None, ignore_unknown: bool = False,
                       **given: Any) -> PipelineRequest:
    """The :class:`PipelineRequest` of a query string (``params``, a ``QueryDict``): a list,
    or with ``pk`` a retrieve of that row; ``given`` sets the rest (``tenant``, ``auth_type``,
    ``context``...). ``parameters`` defaults to :func:`query_parameters`'s. A bad reserved
    parameter (given twice, not a retrieve's, a bad ``total``) is a :class:`ValidationFailed`
    naming it; the filters are checked by the validate stage."""
    split = split_query(params, query_parameters() if parameters is None else parameters,
                        retrieve=pk is not None, ignore_unknown=ignore_unknown)
    if split.errors:
        raise ValidationFailed(split.errors)
    return split.to_request(pk=pk, **given)


def normalize_ordering(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"-created_at,id"`` or ``["-created_at", "id"]`` → ``("-created_at", "id")``."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    cleaned = tuple(p.strip(_BLANK) for p in parts if p and p.strip(_BLANK))
    return cleaned or None


def normalize_names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"status,mode"`` or ``["status", "mode"]`` → ``("status", "mode")`` (blank names
    dropped, duplicates kept once, order kept)."""
    if not value:
        return ()
    parts: list[str] = []
    for item in [value] if isinstance(value, str) else value:
        parts.extend(str(item).split(","))
    return tuple(dict.fromkeys(p.strip(_BLANK) for p in parts if p.strip(_BLANK)))


def normalize_expand(value: str | Iterable[str] | None) -> frozenset[str]:
    """``"a,b.c"`` or ``["a", "b.c"]`` → ``{"a", "b.c"}``: :func:`normalize_names` as a set."""
    return frozenset(normalize_names(value))


def parse_names(params: Any, name: str) -> frozenset[str]:
    """A name-list parameter of a query string (``params``, a ``QueryDict``): ``name=a,b.c`` or
    ``name[]=a&name[]=b.c``, both forms repeated and mixed → ``{"a", "b.c"}``, split and
    stripped by :func:`normalize_expand` (the one rule for ``expand``, ``fields`` and
    ``omit``)."""
    return normalize_expand([*params.getlist(f"{name}[]"), *params.getlist(name)])


@dataclass(frozen=True)
class PipelineRequest:
    """One read request, as a pipeline sees it.

    ``filters`` are raw parameter values, as in a query string (a ``QueryDict`` or a plain
    dict whose values may be lists); the validate stage binds them to the pipeline's FilterSet.
    Give ``offset`` *or* ``cursor``, not both. ``only`` narrows the columns the sources
    read (see :func:`datapipe_django.stages.load_fields`). ``ordering=("relevance",)``
    orders a search by relevance. ``highlight`` (a boolean, or its query-string spelling)
    adds highlighted fragments of the search fields to each row; ``facets`` names fields of
    the pipeline's ``facet_fields`` to count. ``pk`` turns the request into a retrieve of one row.
    ``context`` carries anything else a custom stage, fetcher or enricher needs (the HTTP
    request, the user...); the core never reads it.
    """

    filters: Mapping[str, Any] = field(default_factory=dict)
    search: str | None = None
    tenant: Any = None
    limit: int | None = None
    offset: int | None = None
    cursor: str | None = None
    ordering: tuple[str, ...] | None = None
    expand: frozenset[str] = frozenset()
    auth_type: str | None = None
    pk: Any = None
    context: Mapping[str, Any] = field(default_factory=dict)
    #: Sparse fieldsets (drf-flex-fields' ``fields`` and ``omit``): response field paths,
    #: nested with dots like ``expand``. The core never renders; it keeps them for the
    #: renderer (the view's serializer) and the cache key.
    fields: frozenset[str] = frozenset()
    omit: frozenset[str] = frozenset()
    #: The model fields the response reads (None: every field). The view derives it from
    #: ``fields``/``omit`` and its serializer; the sources then load only these, plus what the
    #: pipeline itself needs (the pk, the ordering keys, the tenant field, the enrichers' keys).
    only: frozenset[str] | None = None
    #: Count every matching row too (``result.total``); None: the pipeline's ``total``.
    total: bool | None = None
    highlight: Any = False
    facets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Flexible inputs are normalised once, here.
        object.__setattr__(self, "ordering", normalize_ordering(self.ordering))
        object.__setattr__(self, "expand", normalize_expand(self.expand))
        object.__setattr__(self, "fields", normalize_expand(self.fields))
        object.__setattr__(self, "omit", normalize_expand(self.omit))
        if self.only is not None:
            object.__setattr__(self, "only", frozenset(self.only))
        object.__setattr__(self, "facets", normalize_names(self.facets))
        if self.search is not None:
            object.__setattr__(self, "search", self.search.strip() or None)
        for name in ("limit", "offset", "cursor"):  # an empty parameter is an absent one
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)

    def replace(self, **changes: Any) -> PipelineRequest:
        """A copy with ``changes`` applied (requests are immutable)."""
        return replace(self, **changes)
