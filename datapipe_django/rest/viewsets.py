"""`PipelineViewSet`: a read-only DRF ViewSet whose list and retrieve run a pipeline."""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import PipelineError, ValidationFailed
from datapipe_django.pipeline import Pipeline
from datapipe_django.request import (
    QUERY_PARAMETERS,
    PipelineRequest,
    QueryParameter,
    parse_boolean,
    query_parameters,
    split_query,
)
from datapipe_django.rest.checks import no_tenant_hook
from datapipe_django.rest.compiled import serializer_data
from datapipe_django.rest.exceptions import (
    SOURCE_HEADER,
    UNAVAILABLE_HEADER,
    pipeline_error_response,
)
from datapipe_django.rest.filters import PipelineFilterBackend, filter_parameters, hidden_filters
from datapipe_django.rest.pagination import PipelinePagination
from datapipe_django.rest.renderers import fast_renderers
from datapipe_django.rest.sparse import check_fieldsets, narrow, parse_fieldset
from datapipe_django.state import PipelineResult

__all__ = ["PipelineViewSet"]

logger = logging.getLogger("datapipe_django.rest")
#: Viewset classes already warned about a missing get_tenant() (the warning is logged once).
_WARNED_NO_TENANT: set[type[Any]] = set()

#: A "did you mean" hint of an error message, with the name it suggests.
_HINT = re.compile(r" Did you mean '([^']*)'\?")


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]")  # what an HTTP token may not contain


class PipelineViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """List and retrieve through ``pipeline``; subclass it and set two attributes::

        class PayoutViewSet(PipelineViewSet):
            pipeline = payouts
            serializer_class = PayoutSerializer

    Query parameters of the list: the FilterSet's fields, ``q``, ``ordering`` (``relevance``
    with ``q``), ``limit``, ``offset`` or ``cursor``, ``expand[]``/``expand``, ``highlight``
    and ``facets``. Override the ``get_*`` hooks to change
    one decision; ``list``/``retrieve`` only orchestrate them.
    """

    pipeline: ClassVar[Pipeline | None] = None
    #: Not used to filter or page (the pipeline does both): they describe the FilterSet and the
    #: paging to DRF's browsable API and to schema generators.
    filter_backends = [PipelineFilterBackend]
    #: Any id reaches retrieve (DRF's default stops at a dot, a Django HTML 404): a malformed
    #: one is the view's JSON 404.
    lookup_value_regex = "[^/]+"
    pagination_class = PipelinePagination
    #: The request being served, set by ``list``/``retrieve``.
    pipeline_request: PipelineRequest | None = None
    #: Query parameter names the view reads itself (everything else goes to the FilterSet).
    search_param: ClassVar[str] = "q"
    ordering_param: ClassVar[str] = "ordering"
    limit_param: ClassVar[str] = "limit"
    offset_param: ClassVar[str] = "offset"
    cursor_param: ClassVar[str] = "cursor"
    #: Sparse fieldsets (drf-flex-fields' names): ``?fields=id,amount``, ``?omit=narration``.
    fields_param: ClassVar[str] = "fields"
    omit_param: ClassVar[str] = "omit"
    #: ``?total=true``: count every matching row too (``"total"`` in the body).
    total_param: ClassVar[str] = "total"
    highlight_param: ClassVar[str] = "highlight"
    facets_param: ClassVar[str] = "facets"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        pipeline = cls.__dict__.get("pipeline")
        if pipeline is not None and cls.__dict__.get("queryset") is None:
            # Lets DRF routers derive a basename and schema generators find the model.
            cls.queryset = pipeline.model._default_manager.none()

    # -- hooks ---------------------------------------------------------------------------------
    def get_pipeline(self) -> Pipeline:
        """The pipeline to run. Override to choose one per request."""
        if self.pipeline is None:
            raise ImproperlyConfigured(
                f"{type(self).__name__} has no `pipeline`. Set `pipeline = <Pipeline>` on the "
                f"class or override get_pipeline()."
            )
        return self.pipeline

    def get_queryset(self) -> QuerySet[Any]:
        """An empty queryset of the pipeline's model (rows come from the pipeline)."""
        return self.get_pipeline().model._default_manager.none()

    def get_tenant(self) -> Any:
        """The caller's tenant. Override when the pipeline has a ``tenant_field``: by default
        ``request.user.tenant`` / ``request.auth.tenant`` if present, else None."""
        for holder in (self.request.auth, self.request.user):
            tenant = getattr(holder, "tenant", None)
            if tenant is not None:
                return getattr(tenant, "pk", tenant)
        return None

    def get_auth_type(self) -> str | None:
        """The caller's auth type (gates expansions and fields). Default: ``"private"`` for
        an authenticated user, ``"public"`` otherwise."""
        user = self.request.user
        return "private" if user is not None and user.is_authenticated else "public"

    def query_parameters(self) -> dict[str, QueryParameter]:
        """The parameters this view reads itself, by their name in the query string: the
        library's reserved ones (:data:`datapipe_django.request.QUERY_PARAMETERS`, renamed by
        ``search_param`` and the other ``*_param`` attributes) and DRF's ``format``. Every
        other parameter is the FilterSet's."""
        names = {p.view_attribute: getattr(self, p.view_attribute)
                 for p in QUERY_PARAMETERS.values()
                 if p.view_attribute and hasattr(self, p.view_attribute)}
        url_format = api_settings.URL_FORMAT_OVERRIDE
        return query_parameters(names, ignored=[url_format] if url_format else [])

    def get_filters(self) -> Any:
        """The raw filter parameters: the query string minus the view's own parameters."""
        found = getattr(self, "_query_split", None)
        if found is not None and found[0] is self.request:
            return found[1].filters  # this request's list query string, split once already
        return split_query(self.request.query_params, self.query_parameters()).filters

    def get_pipeline_request(self, *, pk: Any = None) -> PipelineRequest:
        """Translate the HTTP request into a :class:`PipelineRequest`, by the one translation
        of a query string (:func:`datapipe_django.request.request_from_query`'s) and the hooks.

        A reserved parameter given twice, and on a retrieve any parameter but ``expand``,
        ``fields``/``omit`` (and ``format``), is a 400 (``DATAPIPE["UNKNOWN_PARAMETERS"] =
        "ignore"`` lets a retrieve ignore the others); an empty parameter is an absent one.
        """
        pipeline = self.get_pipeline()
        tenant = self.get_tenant()
        if pipeline.tenant_field and tenant is None:
            self._warn_no_tenant_hook(pipeline)
            raise PermissionDenied("No tenant is associated with these credentials.")
        split = split_query(self.request.query_params, self.query_parameters(),
                            retrieve=pk is not None,
                            ignore_unknown=datapipe_settings.UNKNOWN_PARAMETERS == "ignore")
        if split.errors:
            raise ValidationFailed(split.errors)
        if pk is None:
            self._query_split = (self.request, split)
        auth_type = self.get_auth_type()
        asked = split.to_request(pk=pk, tenant=tenant, auth_type=auth_type,
                                 context={"request": self.request})
        fields, omit = self.get_sparse_fieldsets()
        only = self.get_only(fields, omit, auth_type=auth_type, expand=asked.expand) \
            if fields or omit else None
        if pk is not None:
            return asked.replace(fields=fields, omit=omit, only=only)
        self.check_hidden_filters(auth_type)
        return asked.replace(fields=fields, omit=omit, only=only, total=self.get_total(),
                             filters=self.get_filters())

    def check_hidden_filters(self, auth_type: str | None) -> None:
        """Refuse the filters over fields hidden from ``auth_type`` (the serializer's
        ``Meta.field_auth_types``) as the unknown parameters they are to this caller: they are
        not in its form or its schema either."""
        hidden = hidden_filters(self, auth_type)
        filterset = self.get_pipeline().filterset_class
        if not hidden or filterset is None:
            return
        params = self.request.query_params
        refused = [p for name in sorted(hidden) for p in filter_parameters(filterset, name)
                   if p in params]
        if refused:
            raise ValidationFailed({p: ["Unknown parameter."] for p in refused})

    def get_total(self) -> bool | None:
        """``?total=``: true or false (``1``/``0``, ``yes``/``no`` too), None when absent (the
        pipeline's ``total`` decides)."""
        raw = self.request.query_params.get(self.total_param)
        if raw is None or raw == "":
            return None
        value = parse_boolean(raw)
        if value is not None:
            return value
        raise ValidationFailed({self.total_param: ["Must be a valid boolean."]})

    def get_sparse_fieldsets(self) -> tuple[frozenset[str], frozenset[str]]:
        """``fields`` and ``omit`` of the query string (``a,b.c``, or repeated, or ``[]``)."""
        params = self.request.query_params
        return (parse_fieldset(params, self.fields_param),
                parse_fieldset(params, self.omit_param))

    def get_only(self, fields: frozenset[str], omit: frozenset[str], *,
                 auth_type: str | None, expand: frozenset[str]) -> frozenset[str] | None:
        """Check ``fields``/``omit`` against the serializer as this caller sees it (a 400
        naming the parameter for an unknown name) and return the model fields the narrowed
        response reads (None: every field), for the sources to load only those."""
        context = {**super().get_serializer_context(), "auth_type": auth_type,
                   "expand": expand}
        serializer = self.get_serializer_class()(context=context)
        errors, only = check_fieldsets(serializer, fields, omit, self.get_pipeline().model,
                                       names=(self.fields_param, self.omit_param))
        if errors:
            raise ValidationFailed(errors)
        return only

    def get_serializer_context(self) -> dict[str, Any]:
        """DRF's context plus ``expand``, ``auth_type``, ``fields`` and ``omit`` of the request
        being served."""
        context = dict(super().get_serializer_context())
        pipeline_request = getattr(self, "pipeline_request", None)
        context["expand"] = pipeline_request.expand if pipeline_request else frozenset()
        context["auth_type"] = pipeline_request.auth_type if pipeline_request else None
        context["fields"] = pipeline_request.fields if pipeline_request else frozenset()
        context["omit"] = pipeline_request.omit if pipeline_request else frozenset()
        return context

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        """DRF's, narrowed to the request's ``fields``/``omit`` (sparse fieldsets)."""
        serializer = super().get_serializer(*args, **kwargs)
        context = serializer.context
        if context.get("fields") or context.get("omit"):
            narrow(serializer, frozenset(context.get("fields", ())),
                   frozenset(context.get("omit", ())))
        return serializer

    def build_response(self, result: PipelineResult) -> Response:
        """The list envelope. Override to change its shape."""
        serializer = self.get_serializer(result.items, many=True,
                                         context=self._context_for(result))
        body: dict[str, Any] = {"entity": "collection", "count": result.count}
        if result.total_exact is not None:  # asked for: the exact total, or that there is none
            if result.total_exact:
                body["total"] = result.total
            body["total_exact"] = result.total_exact
        items = serializer_data(serializer)
        if result.highlights is not None:
            for data, highlights in zip(items, result.highlights, strict=True):
                data["_highlights"] = highlights
        body.update(has_more=result.has_more, next_cursor=result.next_cursor, items=items)
        if result.facets is not None:
            body["facets"] = result.facets
        if result.partial:
            body["partial"] = True
        if result.errors:
            body["errors"] = result.errors
        return Response(body, headers=self.get_headers(result))

    def get_headers(self, result: PipelineResult) -> dict[str, str]:
        """``X-Datapipe-Source`` (who served) and, when a source could not answer,
        ``X-Datapipe-Unavailable`` (who was down: the page may lack rows only it holds); neither
        with ``DATAPIPE["SOURCE_HEADERS"] = False``."""
        headers: dict[str, str] = {}
        if datapipe_settings.SOURCE_HEADERS:
            headers[SOURCE_HEADER] = result.source
        if result.unavailable and datapipe_settings.SOURCE_HEADERS:
            headers[UNAVAILABLE_HEADER] = ",".join(result.unavailable)
        if datapipe_settings.SERVER_TIMING:
            headers["Server-Timing"] = server_timing(result)
        return headers

    def _warn_no_tenant_hook(self, pipeline: Pipeline) -> None:
        """Log once per viewset class that it refuses for want of a ``get_tenant()``."""
        cls = type(self)
        if cls in _WARNED_NO_TENANT or not no_tenant_hook(cls):
            return
        _WARNED_NO_TENANT.add(cls)
        logger.warning(
            "%s.%s serves pipeline %r (tenant_field %r) without overriding get_tenant(), and "
            "neither request.auth nor request.user has a `tenant`: every request is refused "
            "(403). Override get_tenant() (system check datapipe_django.W016).",
            cls.__module__, cls.__qualname__, pipeline.name, pipeline.tenant_field)

    def get_renderers(self) -> list[Any]:
        """DRF's renderers, DRF's ``JSONRenderer`` written by orjson when it is installed
        (:mod:`datapipe_django.rest.renderers`; ``DATAPIPE["FAST_PATH"] = False``: DRF's)."""
        return fast_renderers(super().get_renderers())

    # -- actions -------------------------------------------------------------------------------
    def _context_for(self, result: PipelineResult) -> dict[str, Any]:
        # The validated expand set (with parent paths) replaces the raw one.
        return {**self.get_serializer_context(), "expand": result.expand}

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.pipeline_request = self.get_pipeline_request()
        try:
            result = self.get_pipeline().execute(self.pipeline_request)
        except ValidationFailed as exc:
            self._unsuggest_hidden(exc)
            raise
        return self.build_response(result)

    def _unsuggest_hidden(self, exc: ValidationFailed) -> None:
        """A message never suggests a filter hidden from the caller ("Did you mean
        'fund_account'?" to a public caller's typo): it is unknown to them."""
        request = self.pipeline_request
        hidden = hidden_filters(self, request.auth_type if request is not None else None)
        filterset = self.get_pipeline().filterset_class
        if not hidden or filterset is None:
            return
        names = {p for name in hidden for p in filter_parameters(filterset, name)}
        for key, messages in exc.errors.items():
            exc.errors[key] = [_HINT.sub(lambda m: "" if m.group(1) in names else m.group(0),
                                         str(message)) for message in messages]

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        lookup = self.lookup_url_kwarg or self.lookup_field
        self.pipeline_request = self.get_pipeline_request(pk=kwargs[lookup])
        try:
            result = self.get_pipeline().execute(self.pipeline_request)
        except ValidationFailed as exc:
            if "pk" in exc.errors:
                raise NotFound() from exc  # like DRF's get_object_or_404 for a malformed id
            raise
        if not result.items:
            raise NotFound()
        serializer = self.get_serializer(result.items[0], context=self._context_for(result))
        response = Response(serializer_data(serializer), headers=self.get_headers(result))
        if result.errors:
            response["X-Datapipe-Errors"] = ",".join(e["enricher"] for e in result.errors)
        return response

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, PipelineError):
            return pipeline_error_response(exc)
        return super().handle_exception(exc)


def server_timing(result: PipelineResult) -> str:
    """A ``Server-Timing`` value (W3C): each stage, then each source that was asked.

    ``fetch;dur=3.41, source.primary;dur=3.02;desc="ok"``: milliseconds; a source's ``desc``
    is its outcome (ok, unavailable, timeout); sources not asked are left out. Browsers'
    developer tools show it next to the request. Rendering the response comes after, so it
    is not in it.
    """
    parts = [f"{_NOT_TOKEN.sub('-', stage)};dur={seconds * 1e3:.2f}"
             for stage, seconds in result.timings.items()]
    parts += [f'source.{_NOT_TOKEN.sub("-", a.source)};dur={a.duration * 1e3:.2f};'
              f'desc="{a.outcome}"'
              for a in result.attempts if a.outcome not in {"declined", "not_needed"}]
    return ", ".join(parts)
