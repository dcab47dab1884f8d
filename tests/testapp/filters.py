"""``ItemFilterSet``: the FilterSet the test suite uses over :class:`tests.testapp.models.Item`.

It exercises every filter kind :mod:`datapipe_django.specs` compiles. The filter names are
stable (other tests rely on them); the query parameter of each is given where it differs.

===========================  ==============================================================
filter (parameter)           what it does
===========================  ==============================================================
``status``                   ChoiceFilter, exact
``status_not``               ChoiceFilter, ``exclude=True``
``status__in``               MultipleChoiceFilter (repeat the parameter): OR of the values
``status__all``              MultipleChoiceFilter ``conjoined=True``: AND of the values
``status__csv``              ``CharInFilter`` (BaseInFilter + CharFilter): ``a,b``
``name``                     CharFilter, exact
``name__iexact``             CharFilter, iexact
``name__contains``           CharFilter, contains
``name__icontains``          CharFilter, icontains
``name__startswith``         CharFilter, startswith
``name__istartswith``        CharFilter, istartswith
``amount``                   NumberFilter, exact
``amount__gt``, ``__gte``    NumberFilter, gt / gte
``amount__lt``, ``__lte``    NumberFilter, lt / lte
``amount_range``             RangeFilter (``amount_range_min``, ``amount_range_max``)
``amount__in``               ``NumberInFilter`` (BaseInFilter + NumberFilter): ``1,2,3``
``amount__range``            ``NumberRangeFilter`` (BaseRangeFilter + NumberFilter): ``1,5``
``amount_lookup``            LookupChoiceFilter (``amount_lookup``, ``amount_lookup_lookup``:
                             exact, gt, lt)
``active``                   BooleanFilter (``true``/``false``)
``created_at``               IsoDateTimeFromToRangeFilter (``created_at_after``,
                             ``created_at_before``)
``created_after``            IsoDateTimeFilter, ``created_at`` gte
``created_before``           DateTimeFilter, ``created_at`` lt
``day``                      DateFromToRangeFilter (``day_after``, ``day_before``)
``on_day``                   DateFilter, ``day`` exact
``score``                    NumberFilter, exact
``score__isnull``            BooleanFilter, ``lookup_expr="isnull"``
``score_not``                NumberFilter on ``score``, ``exclude=True``
``category``                 ModelChoiceFilter (a pk, or ``null`` for "no category")
``categories``               ModelMultipleChoiceFilter on ``category`` (pks, or ``null``)
``owner_name``               CharFilter on the path ``owner__name``
``custom``                   ``method=`` filter with a spec hook (``spec_custom``): name or
                             owner name contains the value, case-insensitively
``opaque``                   ``method=`` filter without a spec: uncompilable
===========================  ==============================================================
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from datapipe_django.specs import Contains, Spec
from tests.testapp.models import Category, Item

__all__ = ["CharInFilter", "ItemFilterSet", "NumberInFilter", "NumberRangeFilter"]


class NumberInFilter(django_filters.BaseInFilter, django_filters.NumberFilter):
    """Comma-separated numbers, ``in`` lookup."""


class NumberRangeFilter(django_filters.BaseRangeFilter, django_filters.NumberFilter):
    """Two comma-separated numbers, ``range`` lookup."""


class CharInFilter(django_filters.BaseInFilter, django_filters.CharFilter):
    """Comma-separated strings, ``in`` lookup."""


def _categories(request: object) -> QuerySet[Category]:
    return Category.objects.all()


class ItemFilterSet(django_filters.FilterSet):
    """Every filter kind the specs compile (see the module docstring for the names)."""

    status = django_filters.ChoiceFilter(choices=Item.Status.choices)
    status_not = django_filters.ChoiceFilter(
        field_name="status", choices=Item.Status.choices, exclude=True
    )
    status__in = django_filters.MultipleChoiceFilter(
        field_name="status", choices=Item.Status.choices
    )
    status__all = django_filters.MultipleChoiceFilter(
        field_name="status", choices=Item.Status.choices, conjoined=True
    )
    status__csv = CharInFilter(field_name="status")

    name = django_filters.CharFilter()
    name__iexact = django_filters.CharFilter(field_name="name", lookup_expr="iexact")
    name__contains = django_filters.CharFilter(field_name="name", lookup_expr="contains")
    name__icontains = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    name__startswith = django_filters.CharFilter(field_name="name", lookup_expr="startswith")
    name__istartswith = django_filters.CharFilter(field_name="name", lookup_expr="istartswith")

    amount = django_filters.NumberFilter()
    amount__gt = django_filters.NumberFilter(field_name="amount", lookup_expr="gt")
    amount__gte = django_filters.NumberFilter(field_name="amount", lookup_expr="gte")
    amount__lt = django_filters.NumberFilter(field_name="amount", lookup_expr="lt")
    amount__lte = django_filters.NumberFilter(field_name="amount", lookup_expr="lte")
    amount_range = django_filters.RangeFilter(field_name="amount")
    amount__in = NumberInFilter(field_name="amount")
    amount__range = NumberRangeFilter(field_name="amount")
    amount_lookup = django_filters.LookupChoiceFilter(
        field_name="amount",
        field_class=forms.DecimalField,
        lookup_choices=["exact", "gt", "lt"],
    )

    active = django_filters.BooleanFilter()

    created_at = django_filters.IsoDateTimeFromToRangeFilter()
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.DateTimeFilter(field_name="created_at", lookup_expr="lt")
    day = django_filters.DateFromToRangeFilter()
    on_day = django_filters.DateFilter(field_name="day")

    score = django_filters.NumberFilter()
    score__isnull = django_filters.BooleanFilter(field_name="score", lookup_expr="isnull")
    score_not = django_filters.NumberFilter(field_name="score", exclude=True)

    category = django_filters.ModelChoiceFilter(queryset=_categories, null_label="No category")
    categories = django_filters.ModelMultipleChoiceFilter(
        field_name="category", queryset=_categories, null_label="No category"
    )
    owner_name = django_filters.CharFilter(field_name="owner__name")

    custom = django_filters.CharFilter(method="filter_custom")
    opaque = django_filters.CharFilter(method="filter_opaque")

    class Meta:
        model = Item
        fields: list[str] = []

    def filter_custom(self, queryset: QuerySet[Item], name: str, value: str) -> QuerySet[Item]:
        """Name or owner name contains ``value``, case-insensitively."""
        return queryset.filter(Q(name__icontains=value) | Q(owner__name__icontains=value))

    def spec_custom(self, name: str, value: str) -> Spec:
        """The spec of :meth:`filter_custom`, so that every source can serve ``custom``."""
        return Contains("name", value, case_insensitive=True) | Contains(
            "owner__name", value, case_insensitive=True
        )

    def filter_opaque(self, queryset: QuerySet[Item], name: str, value: str) -> QuerySet[Item]:
        """A filter no spec describes: sources that need a spec decline it."""
        return queryset.filter(name__regex=value)
