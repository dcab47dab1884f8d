"""Serializer helpers: fields visible per caller auth type."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = ["AuthTypeFieldsMixin"]


class AuthTypeFieldsMixin:
    """Leaves out the fields the caller's auth type may not see, declared on ``Meta``::

        class PayoutSerializer(AuthTypeFieldsMixin, serializers.ModelSerializer):
            fund_account = ExpandableField(FundAccountSerializer)

            class Meta:
                model = Payout
                fields = ("id", "amount", "utr", "fund_account")
                # field -> the auth types that may see it; nobody else receives it at all,
                # neither its id nor its expansion
                field_auth_types = {"utr": {"private"}, "fund_account": {"private"}}

    The caller's auth type is ``context["auth_type"]`` (``PipelineViewSet`` puts the result of
    ``get_auth_type()`` there, and nested serializers of an ``ExpandableField`` inherit it).
    Without an auth type only the unrestricted fields are rendered. Fields not named in
    ``field_auth_types`` are visible to everyone.
    """

    context: dict[str, Any]

    def get_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = super().get_fields()  # type: ignore[misc]
        restricted = self.get_field_auth_types()
        if not restricted:
            return fields
        auth_type = self.context.get("auth_type")
        for name, allowed in restricted.items():
            if name not in fields:
                raise ImproperlyConfigured(
                    f"{type(self).__name__}.Meta.field_auth_types names {name!r}, which is not "
                    f"a field of the serializer (fields: {', '.join(fields)})."
                )
            if auth_type not in allowed:
                del fields[name]
        return fields

    def get_field_auth_types(self) -> Mapping[str, Collection[str]]:
        """``Meta.field_auth_types``, checked. Override to decide per request."""
        meta = getattr(self, "Meta", None)
        restricted = getattr(meta, "field_auth_types", None) or {}
        if not isinstance(restricted, Mapping) or any(
                isinstance(v, str) or not isinstance(v, Collection)
                for v in restricted.values()):
            raise ImproperlyConfigured(
                f"{type(self).__name__}.Meta.field_auth_types must map field names to "
                f"collections of auth types, e.g. {{'utr': {{'private'}}}}."
            )
        return restricted
