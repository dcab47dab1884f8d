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
