"""Which parameters a FilterSet reads and which values its columns can hold.

What the validate stage checks before anything is bound: the names of the query parameters a
FilterSet reads (:func:`filter_parameters`, :func:`filterset_parameters`), what is wrong with
a request's names and number of values (:func:`check_parameters`), and whether the databases
can compare a column with a value (:func:`check_value`). Nothing here runs a query.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connections, models
from django.forms.widgets import MultiWidget
from django_filters import filters as df
from django_filters.filterset import BaseFilterSet
from django_filters.widgets import BooleanWidget, QueryArrayWidget

from datapipe_django.request import parameter_key, quote

__all__ = [
    "check_parameters",
    "check_value",
    "filter_parameters",
    "filterset_parameters",
    "is_csv",
    "storage_field",
]


def storage_field(field: Any) -> Any:
    """The field whose column holds ``field``'s values: a foreign key's target, followed to a
    concrete column."""
    while field is not None and getattr(field, "is_relation", False):
        field = field.target_field
    return field


@functools.lru_cache(maxsize=256)
def _integer_range(internal_type: str, aliases: tuple[str, ...]) -> tuple[int | None, int | None]:
    """The integers a column of ``internal_type`` holds on every one of ``aliases``."""
    ranges = [r for r in (_alias_range(internal_type, alias) for alias in aliases)
              if r is not None]
    lows = [lo for lo, _ in ranges if lo is not None]
    highs = [hi for _, hi in ranges if hi is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _alias_range(internal_type: str, alias: str) -> tuple[int | None, int | None] | None:
    """The integers a column of ``internal_type`` holds on ``alias`` (None: not a database
    that says)."""
    try:
        low, high = connections[alias].ops.integer_field_range(internal_type)
    except (KeyError, AttributeError, TypeError):
        return None
    if internal_type.startswith("Positive") and high is not None:
        low = -high - 1  # comparing with a negative value is fine, it matches nothing
    return low, high


def check_value(field: Any, value: Any) -> str | None:
    """Why the databases cannot compare ``field`` with ``value`` (an integer past the
    column's range on one of ``settings.DATABASES``), or None. Runs no query."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    storage = storage_field(field)
    if not isinstance(storage, models.IntegerField | models.AutoField):
        return None
    low, high = _integer_range(storage.get_internal_type(), tuple(connections.settings))
    if high is not None and value > high:
        return f"Ensure this value is less than or equal to {high}."
    if low is not None and value < low:
        return f"Ensure this value is greater than or equal to {low}."
    return None


def _widget_of(filter_: df.Filter) -> Any:
    widget = filter_.extra.get("widget") or getattr(filter_.field_class, "widget", None)
    return widget if isinstance(widget, type) else type(widget)


@functools.lru_cache(maxsize=256)
def filterset_parameters(filterset_class: type[BaseFilterSet]) -> dict[str, tuple[str, bool]]:
    """Every query parameter ``filterset_class`` reads: name → (filter name, may repeat).

    The names are :func:`filter_parameters`' (``<name>_min``/``_max`` for a range,
    ``_after``/``_before`` for dates, ``<name>_lookup`` for a lookup choice); a query-array
    filter also reads ``<name>[]``, and a multiple-choice or query-array filter may repeat its
    parameter.
    """
    parameters: dict[str, tuple[str, bool]] = {}
    for name, keys in filter_parameters(filterset_class).items():
        filter_ = filterset_class.base_filters[name]
        widget = _widget_of(filter_)
        if isinstance(filter_, df.BaseCSVFilter):
            array = not is_csv(filter_)
        else:
            array = widget is not None and issubclass(widget, QueryArrayWidget)
        many = array or (widget is not None and issubclass(
            widget, forms.SelectMultiple | forms.MultipleHiddenInput))
        for key in keys:
            parameters[key] = (name, many)
        if array:
            parameters[f"{name}[]"] = (name, True)
    return parameters


def _raw_values(data: Mapping[str, Any], key: str) -> list[Any]:
    if hasattr(data, "getlist"):
        values = data.getlist(key)
    else:
        value = data[key]
        values = list(value) if isinstance(value, list | tuple) else [value]
    return [v for v in values if v is not None and v != ""]


def check_parameters(filterset_class: type[BaseFilterSet] | None, data: Mapping[str, Any], *,
                     unknown: str = "error") -> dict[str, list[str]]:
    """What is wrong with the names and the number of values of ``data`` (raw parameters for
    ``filterset_class``), before anything is bound: an unknown name (unless ``unknown`` is
    ``"ignore"``), a single-valued parameter given twice, a non-boolean for a boolean filter,
    a NUL character. Runs no query."""
    known = filterset_parameters(filterset_class) if filterset_class is not None else {}  # type: ignore[arg-type]
    errors: dict[str, list[str]] = {}
    unknown_names = []
    for key in data:
        if key not in known:
            unknown_names.append(key)
            continue
        name, many = known[key]
        why = _values_error(filterset_class.base_filters[name], key,  # type: ignore[union-attr]
                            _raw_values(data, key), many=many)
        if why:
            errors[key] = [why]
    if unknown_names and unknown != "ignore":
        errors.update(_unknown_errors(unknown_names, known))
    return errors


def _values_error(filter_: df.Filter, key: str, values: list[Any], *, many: bool) -> str | None:
    """What is wrong with the values given for one known parameter, or None."""
    if len(values) > 1 and not many:
        return "Give this parameter once."
    if any("\x00" in str(v) for v in values):
        return "Null characters are not allowed."
    if values and not _boolean_ok(filter_, key, values[-1]):
        return f"Must be true or false, not {quote(values[-1])}."
    return None


def _unknown_errors(names: list[str], known: Mapping[str, Any]) -> dict[str, list[str]]:
    """An error per unknown parameter (the first ten), each with the closest known name."""
    errors: dict[str, list[str]] = {}
    for key in names[:10]:
        close = difflib.get_close_matches(key, list(known), n=1) if len(key) < 100 else []
        errors[parameter_key(key)] = [
            "Unknown parameter." + (f" Did you mean {close[0]!r}?" if close else "")]
    if len(names) > 10:
        errors["non_field_errors"] = [f"{len(names)} unknown parameters."]
    return errors


def _boolean_ok(filter_: df.Filter, key: str, raw: Any) -> bool:
    """Whether a boolean filter's widget reads ``raw`` as a boolean (or as "not given"):
    ``true``/``false`` (django-filter's ``BooleanWidget`` also takes ``1``/``0``, in any case);
    not Django's legacy ``2``/``3`` of ``NullBooleanSelect``, nor anything it reads as None."""
    if not issubclass(filter_.field_class, forms.NullBooleanField):
        return True
    text = str(raw)
    if text.lower() == "unknown":
        return True
    widget = _widget_of(filter_)
    if widget is not None and issubclass(widget, BooleanWidget):
        return text.lower() in {"true", "false", "1", "0"}
    if widget is not None and issubclass(widget, forms.NullBooleanSelect):
        return text in {"true", "false", "True", "False"}
    return True


def filter_parameters(filterset_class: type[BaseFilterSet]) -> dict[str, list[str]]:
    """The query parameters each filter of ``filterset_class`` reads, by filter name.

    Most filters read the parameter of their own name; a filter whose widget has several parts
    reads one parameter per part, named as django-filter names them: ``created_at`` (a
    ``DateTimeFromToRangeFilter``) reads ``created_at_after`` and ``created_at_before``, a
    ``RangeFilter`` ``<name>_min`` and ``<name>_max``, a ``LookupChoiceFilter`` ``<name>`` and
    ``<name>_lookup``. The form is built without a request and without data, as for an empty
    query string; nothing is queried.
    """
    model = filterset_class._meta.model
    queryset = model._default_manager.none() if model is not None else None
    form = filterset_class(data=None, queryset=queryset).form
    parameters: dict[str, list[str]] = {}
    for name in filterset_class.base_filters:
        widget: Any = form.fields[name].widget if name in form.fields else None
        suffixes = getattr(widget, "suffixes", None)
        if suffixes is not None and hasattr(widget, "suffixed"):
            parameters[name] = [widget.suffixed(name, suffix) for suffix in suffixes]
        elif isinstance(widget, MultiWidget):  # Django's own: name_0, name_1...
            parameters[name] = [name + part for part in getattr(widget, "widgets_names", ())]
        else:
            parameters[name] = [name]
    return parameters


# A FilterSet instance deep-copies every filter, and its form every field, on each request:
# most of a request's validation when it names one or two of thirty filters. A filter the
# request does not name contributes nothing (an empty value is skipped by every filter's own
# rule), so the request is bound to a subclass holding only the filters it names, built once
# per FilterSet class and set of names. Filters that would act without a parameter (required
# ones, a field whose empty input cleans to a value) are always kept; a FilterSet that shapes
# itself per instance or validates across fields (its own __init__, form, form class or
# Meta.form) is bound whole.
_NARROWING: dict[type[BaseFilterSet], tuple[dict[str, list[str]], frozenset[str]] | None] = {}
_NARROWED: dict[tuple[type[BaseFilterSet], frozenset[str]], type[BaseFilterSet]] = {}


def is_csv(filter_: df.Filter | None) -> bool:
    """Whether the filter reads one comma-separated string (not a query array)."""
    if not isinstance(filter_, df.BaseCSVFilter):
        return False
    widget = filter_.extra.get("widget")
    widget_class = widget if isinstance(widget, type) else type(widget)
    return not issubclass(widget_class, QueryArrayWidget)
