"""``datapipe_django.specs.parameters``: the query parameters each filter of a FilterSet reads."""

from __future__ import annotations

import datetime as dt

import django_filters
import pytest
from django import forms
from django.http import QueryDict

from datapipe_django.specs import (
    Eq,
    compile_filterset,
    filter_parameters,
)
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item

# -- the query parameters of a FilterSet ----------------------------------------------------------

class SplitDateTimeFilter(django_filters.Filter):
    field_class = forms.SplitDateTimeField  # Django's MultiWidget: created_0, created_1


class SplitFilterSet(django_filters.FilterSet):
    created = SplitDateTimeFilter(field_name="created_at")
    day = django_filters.DateFromToRangeFilter()

    class Meta:
        model = Item
        fields = ["status"]


@pytest.mark.parametrize("filterset_class", [ItemFilterSet, SplitFilterSet])
def test_filter_parameters_are_the_names_each_filters_widget_reads(filterset_class):
    parameters = filter_parameters(filterset_class)
    assert list(parameters) == list(filterset_class.base_filters)
    form = filterset_class(data={}, queryset=Item.objects.none()).form
    every = {p for ps in parameters.values() for p in ps}
    for name, names in parameters.items():
        widget = form.fields[name].widget
        for parameter in names:
            # Given that parameter alone, the filter's widget reads a value; given every other
            # parameter of the FilterSet, it reads what it reads from nothing.
            absent = widget.value_from_datadict(QueryDict(), {}, name)
            alone = widget.value_from_datadict(QueryDict(f"{parameter}=true"), {}, name)
            others = widget.value_from_datadict(
                QueryDict("&".join(f"{p}=true" for p in every - set(names))), {}, name)
            assert alone != absent, parameter
            assert others == absent, parameter


def test_filter_parameters_of_multi_part_widgets():
    parameters = filter_parameters(SplitFilterSet)
    assert parameters == {"status": ["status"], "created": ["created_0", "created_1"],
                          "day": ["day_after", "day_before"]}
    spec = compile_filterset(SplitFilterSet, {"created_0": "2026-01-02", "created_1": "10:30"})
    assert spec == Eq("created_at", dt.datetime(2026, 1, 2, 10, 30, tzinfo=dt.UTC))
