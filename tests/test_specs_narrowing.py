"""``compile_filterset`` binds a request to the filters it names only: the same answer.

Binding thirty filters to a query that names one is most of a list request's validation, so
``compile_filterset`` binds a per-class subclass holding the named filters (and those that act
without a parameter). The property: for any query string over ``ItemFilterSet``'s parameters,
valid or not, the narrowed binding gives the same spec, the same errors, the same refusal as
binding the whole FilterSet.
"""

from __future__ import annotations

import contextlib

import django_filters
import pytest
from django import forms
from django.http import QueryDict
from hypothesis import given, settings
from hypothesis import strategies as st

from datapipe_django import specs
from datapipe_django.errors import ValidationFailed
from datapipe_django.specs import Uncompilable, compile_filterset, filter_parameters
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db

PARAMETERS = sorted({p for params in filter_parameters(ItemFilterSet).values() for p in params})
VALUES = ["processed", "queued", "x", "1", "-5", "1.5", "99999999999999999999", "2024-01-01",
          "2024-01-01T10:00:00Z", "2024-13-01", "true", "false", "null", "1,2", "1,5", "", " ",
          "gt", "exact", "caf\u00e9", "%", "0"]


def outcome(filterset_class, data):
    try:
        return "spec", compile_filterset(filterset_class, data)
    except ValidationFailed as exc:
        return "invalid", exc.errors
    except Uncompilable as exc:
        return "uncompilable", exc.filter_name


@contextlib.contextmanager
def bound_whole(filterset_class):
    saved = specs._NARROWING.get(filterset_class, "missing")
    specs._NARROWING[filterset_class] = None  # what _narrowing_plan says of a FilterSet it
    try:                                      # cannot narrow: bind it whole
        yield
    finally:
        if saved == "missing":
            specs._NARROWING.pop(filterset_class, None)
        else:
            specs._NARROWING[filterset_class] = saved


def whole_outcome(filterset_class, data):
    with bound_whole(filterset_class):
        return outcome(filterset_class, data)


queries = st.lists(st.tuples(st.sampled_from([*PARAMETERS, "unknown", "limit"]),
                             st.sampled_from(VALUES)), max_size=6)


@settings(max_examples=400, deadline=None)
@given(queries)
def test_a_narrowed_binding_answers_as_the_whole_filterset(pairs):
    data = QueryDict(mutable=True)
    for key, value in pairs:
        data.appendlist(key, value)
    assert outcome(ItemFilterSet, data) == whole_outcome(ItemFilterSet, data)


def test_only_the_named_filters_are_bound():
    filterset = specs._narrowed(ItemFilterSet, QueryDict("status=queued&amount_range_min=3"))
    assert set(filterset.base_filters) == {"status", "amount_range"}
    assert specs._narrowed(ItemFilterSet, QueryDict("status=x")) is specs._narrowed(
        ItemFilterSet, QueryDict("status=y"))  # one class per set of names


class Required(django_filters.FilterSet):
    status = django_filters.CharFilter(required=True)
    name = django_filters.CharFilter()

    class Meta:
        model = Item
        fields: list[str] = []


class Defaulting(django_filters.FilterSet):
    """A filter whose empty input cleans to a value: it acts without a parameter."""

    class DefaultField(forms.CharField):
        def to_python(self, value):
            return super().to_python(value) or "queued"

    status = django_filters.CharFilter()
    name = django_filters.CharFilter()

    class Meta:
        model = Item
        fields: list[str] = []


Defaulting.base_filters["status"].field_class = Defaulting.DefaultField


class NameOrStatus(forms.Form):
    def clean(self):
        if not self.cleaned_data.get("name") and not self.cleaned_data.get("status"):
            raise forms.ValidationError("Give a name or a status.")
        return self.cleaned_data


class OwnForm(django_filters.FilterSet):
    status = django_filters.CharFilter()
    name = django_filters.CharFilter()

    class Meta:
        model = Item
        fields: list[str] = []
        form = NameOrStatus


def test_filters_that_act_without_a_parameter_are_always_bound():
    assert whole_outcome(Required, {}) == outcome(Required, {})
    assert outcome(Required, {})[0] == "invalid"
    assert set(specs._narrowed(Required, QueryDict("name=a")).base_filters) == {"status", "name"}
    assert outcome(Defaulting, {"name": "a"}) == whole_outcome(Defaulting, {"name": "a"})
    assert "status" in specs._narrowed(Defaulting, QueryDict("name=a")).base_filters


def test_a_filterset_with_its_own_form_is_bound_whole():
    assert specs._narrowed(OwnForm, QueryDict("name=a")) is OwnForm
    assert outcome(OwnForm, {})[0] == "invalid"
