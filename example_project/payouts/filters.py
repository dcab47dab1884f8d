"""The payouts FilterSet. It is the pipeline's specification: every source applies it."""

from __future__ import annotations

import re

import django_filters
from django import forms
from django.core.exceptions import ValidationError

from example_project.payouts.models import Payout


class WholeNumberField(forms.IntegerField):
    """Digits only: Django's IntegerField also takes ``1.0`` and ``1e3``-like decimals."""

    def to_python(self, value: object) -> int | None:
        if isinstance(value, str) and value.strip() and not re.fullmatch(r"\s*[+-]?\d+\s*",
                                                                        value):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class IntegerFilter(django_filters.Filter):
    """A whole-number filter (django-filter's NumberFilter accepts decimals)."""

    field_class = WholeNumberField


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """``?status__in=processed,reversed``: comma-separated, each value a valid choice."""


class PayoutFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Payout.Status.choices)
    status__in = ChoiceInFilter(field_name="status", lookup_expr="in",
                                choices=Payout.Status.choices)
    mode = django_filters.ChoiceFilter(choices=Payout.Mode.choices)
    amount_min = IntegerFilter(field_name="amount", lookup_expr="gte", min_value=0)
    amount_max = IntegerFilter(field_name="amount", lookup_expr="lte", min_value=0)
    # ?created_at_after=2025-01-01&created_at_before=2025-02-01T00:00:00Z (ISO 8601, inclusive)
    created_at = django_filters.IsoDateTimeFromToRangeFilter()
    fund_account = IntegerFilter(field_name="fund_account")
    user = IntegerFilter(field_name="user")
    reference_id = django_filters.CharFilter()
    utr__isnull = django_filters.BooleanFilter(field_name="utr", lookup_expr="isnull")

    class Meta:
        model = Payout
        fields: list[str] = []
