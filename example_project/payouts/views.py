"""``/v1/payouts``: the payouts pipeline behind a DRF viewset."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ParseError

from datapipe_django.rest import PipelineViewSet
from example_project.payouts.pipelines import payouts
from example_project.payouts.serializers import PayoutSerializer

#: The merchant a request without ``X-Merchant-Id`` reads, with DEBUG on only (demo only).
DEMO_MERCHANT_ID = 1

AUTH_TYPES = frozenset({"public", "private"})


def _documented(viewset: type[PipelineViewSet]) -> type[PipelineViewSet]:
    """Declares the caller headers in the OpenAPI schema (with drf-spectacular installed), so
    Swagger UI's "Try it out" can pick the merchant and the auth type."""
    # The example sets OPENAPI; a project that imports this module (the tests) may not.
    if not getattr(settings, "OPENAPI", "drf_spectacular" in settings.INSTALLED_APPS):
        return viewset
    from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view

    headers = [
        OpenApiParameter(
            "X-Merchant-Id", {"type": "integer", "minimum": 1}, OpenApiParameter.HEADER,
            required=not settings.DEBUG,
            description="The caller's merchant (tenant): only its payouts are read. Set by the "
                        "API gateway after authentication."
                        + (f" Demo default with DEBUG on: {DEMO_MERCHANT_ID}."
                           if settings.DEBUG else "")),
        OpenApiParameter(
            "X-Auth-Type", {"type": "string", "enum": sorted(AUTH_TYPES),
                            "default": "public"}, OpenApiParameter.HEADER,
            description="`private` callers also see `utr` and may expand fund accounts and "
                        "contacts (and filter by them); `public` is the default."),
    ]
    return extend_schema_view(list=extend_schema(parameters=headers),
                              retrieve=extend_schema(parameters=headers))(viewset)


@_documented
class PayoutViewSet(PipelineViewSet):
    """List (``GET /v1/payouts``) and retrieve (``GET /v1/payouts/<id>``) payouts.

    The caller is identified by headers, as an API gateway in front of the service would set
    them after authenticating: ``X-Merchant-Id`` (the tenant) and ``X-Auth-Type``
    (``public``, the default, or ``private``: may expand fund accounts and contacts).
    """

    pipeline = payouts
    serializer_class = PayoutSerializer

    def get_tenant(self) -> int | None:
        raw = self.request.headers.get("X-Merchant-Id")
        if raw is None:
            # DEMO ONLY: lets `curl http://127.0.0.1:8000/v1/payouts` work without headers.
            # With DEBUG off a request without a merchant is refused (403).
            return DEMO_MERCHANT_ID if settings.DEBUG else None
        try:
            merchant_id = int(raw)
        except ValueError:
            raise ParseError("X-Merchant-Id must be a merchant id (a whole number).") from None
        if merchant_id < 1:
            raise ParseError("X-Merchant-Id must be a merchant id (a whole number).")
        return merchant_id

    def get_auth_type(self) -> str:
        auth_type = self.request.headers.get("X-Auth-Type", "public").strip().lower()
        if auth_type not in AUTH_TYPES:
            raise ParseError("X-Auth-Type must be 'public' or 'private'.")
        return auth_type
