"""FilterSet → Spec: the compilation of a bound django-filter ``FilterSet``.

:func:`spec_from_filterset` does exactly what ``FilterSet.filter_queryset`` would do, filter by
filter. A filter that cannot be expressed raises :class:`~datapipe_django.specs.Uncompilable`.
Binding a request's raw parameters first, cheaply, is :mod:`datapipe_django.specs.binding`'s
(:func:`~datapipe_django.specs.binding.compile_filterset`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_filters import filters as df
from django_filters.constants import EMPTY_VALUES
from django_filters.filterset import BaseFilterSet

from datapipe_django.errors import ValidationFailed
from datapipe_django.request import QUOTE_LIMIT
from datapipe_django.specs.memory import prepare
from datapipe_django.specs.parameters import check_value
from datapipe_django.specs.paths import crosses_many, model_field, split_lookup
from datapipe_django.specs.tree import (
    Contains,
    EndsWith,
    Eq,
    IEq,
    In,
    IsNull,
    MatchAll,
    MatchNone,
    Not,
    Or,
    Range,
    Spec,
    StartsWith,
    Uncompilable,
    and_all,
)

if TYPE_CHECKING:
    from django.db.models import Field  # noqa: F401

__all__ = ["SUPPORTED_LOOKUPS", "SpecHook", "spec_from_filterset"]

#: Lookups that :func:`spec_from_filterset` knows how to compile.
SUPPORTED_LOOKUPS = frozenset(
    {
        "exact",
        "iexact",
        "in",
        "gt",
        "gte",
        "lt",
        "lte",
        "range",
        "isnull",
        "contains",
        "icontains",
        "startswith",
        "istartswith",
        "endswith",
        "iendswith",
    }
)

_TEXT_LOOKUPS = frozenset(
    {"iexact", "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith"}
)


SpecHook = Callable[[str, Any], Spec]


def _errors_of(form: Any) -> dict[str, list[str]]:
    return {name: [_short(str(message)) for message in messages]
            for name, messages in form.errors.items()}


def _short(message: str) -> str:
    """A form's message with any long quoted value cut (django-filter echoes the value)."""
    if len(message) <= 2 * QUOTE_LIMIT:
        return message
    return f"{message[:QUOTE_LIMIT]}... ({len(message)} characters)"


def spec_from_filterset(filterset: BaseFilterSet) -> Spec:
    """Build the :class:`Spec` a bound FilterSet applies, filter by filter.

    Walks ``filterset.filters`` and ``form.cleaned_data`` exactly as
    ``FilterSet.filter_queryset`` and each ``Filter.filter()`` would: empty values are
    skipped with each filter's own rule, ``lookup_expr``, ``field_name`` paths and
    ``exclude=True`` are honoured, ``MultipleChoiceFilter`` ORs its values (ANDs them with
    ``conjoined=True``), range filters become :class:`Range`, ``null_value`` becomes
    :class:`IsNull`. Values are prepared by the model field as Django would (an integer column
    compared with ``Decimal("1.5")`` is compared with ``1``; a date column with a datetime,
    with its date).

    A filter declared with ``method=`` compiles only through a hook: a FilterSet method
    ``spec_<filter_name>(self, name, value) -> Spec`` or a ``spec`` attribute on the filter, a
    callable ``(name, value) -> Spec`` (``name`` is the filter's ``field_name``, as for
    ``method=``). A hook also overrides the default compilation of any other filter.

    Raises :class:`~datapipe_django.errors.ValidationFailed` if the FilterSet is invalid
    (``errors`` maps each bad parameter to its messages) and :class:`Uncompilable` for a
    filter that cannot be expressed. An unbound FilterSet filters nothing: :class:`MatchAll`.
    """
    if not filterset.is_bound:
        return MatchAll()
    if not filterset.is_valid():
        raise ValidationFailed(_errors_of(filterset.form))
    cls = type(filterset)
    if cls.filter_queryset is not BaseFilterSet.filter_queryset:
        raise Uncompilable(
            None, f"{cls.__name__} overrides filter_queryset(), which a spec cannot mirror."
        )
    model = filterset.queryset.model
    specs: list[Spec] = []
    for name, value in filterset.form.cleaned_data.items():
        spec = _compile_filter(filterset, model, name, filterset.filters[name], value)
        if spec is not None:
            specs.append(spec)
    return and_all(specs)


def _hook(filterset: BaseFilterSet, name: str, filter_: df.Filter) -> SpecHook | None:
    hook = getattr(filterset, f"spec_{name}", None)
    if callable(hook):
        return hook
    hook = getattr(filter_, "spec", None)
    return hook if callable(hook) else None


@dataclass(frozen=True)
class _Filter:
    """One filter of a bound FilterSet, as its compilation sees it."""

    filterset: BaseFilterSet
    model: type[models.Model]
    name: str
    filter: Any

    def leaf(self, key: str, value: Any) -> Spec:
        """``filter(**{key: value})`` (``exclude(...)`` for an ``exclude=True`` filter)."""
        spec = _leaf(self.model, self.name, key, value)
        return Not(spec) if self.filter.exclude else spec

    def lookup(self, lookup_expr: str | None = None) -> str:
        return f"{self.filter.field_name}__{lookup_expr or self.filter.lookup_expr}"


def _compile_filter(
    filterset: BaseFilterSet,
    model: type[models.Model],
    name: str,
    filter_: df.Filter,
    value: Any,
) -> Spec | None:
    """The spec of one filter with its cleaned ``value`` (None: the filter does nothing), as
    its ``filter()`` would filter: a spec hook first, then django-filter's own filter kinds."""
    hook = _hook(filterset, name, filter_)
    if hook is not None:
        return _from_hook(hook, name, filter_, value)
    if filter_.method is not None:
        if value in EMPTY_VALUES:  # FilterMethod skips empty values: nothing to compile
            return None
        raise Uncompilable(
            name,
            f"uses method={filter_.method!r} and has no spec: define "
            f"spec_{name}(self, name, value) on the FilterSet.",
        )
    if isinstance(filter_, df.DateRangeFilter) and filter_.filters is df.DateRangeFilter.filters:
        return _date_range(model, name, filter_.field_name, value)
    compile_kind = _FILTER_KINDS.get(type(filter_).filter)
    if compile_kind is None:
        # Its own filter() decides; every filter shipped with django-filter (and every sane
        # custom one) ignores an absent parameter, so only a given value makes it uncompilable.
        if value in EMPTY_VALUES:
            return None
        raise Uncompilable(name, f"{type(filter_).__name__} is not a filter a spec can mirror.")
    return compile_kind(_Filter(filterset, model, name, filter_), value)


def _from_hook(hook: SpecHook, name: str, filter_: df.Filter, value: Any) -> Spec | None:
    if value in EMPTY_VALUES:
        return None
    spec = hook(filter_.field_name, value)
    if not isinstance(spec, Spec):
        raise TypeError(f"The spec hook of filter {name!r} returned {spec!r}, not a Spec.")
    return spec


def _generic(f: _Filter, value: Any) -> Spec | None:
    """``Filter.filter``: one lookup, skipped for an empty value."""
    if value in EMPTY_VALUES:
        return None
    return f.leaf(f.lookup(), value)


def _choice(f: _Filter, value: Any) -> Spec | None:
    """``ChoiceFilter.filter``: its ``null_value`` means NULL."""
    if value == f.filter.null_value:
        return f.leaf(f.lookup(), None)
    return _generic(f, value)


def _lookup_choice(f: _Filter, value: Any) -> Spec | None:
    """``LookupChoiceFilter.filter``: the lookup the client chose."""
    if not value:
        return None
    return f.leaf(f.lookup(value.lookup_expr), value.value)


def _range(f: _Filter, value: Any) -> Spec | None:
    """``RangeFilter.filter``: ``range`` with both ends, ``gte``/``lte`` with one."""
    if not value:
        return None
    if value.start is not None and value.stop is not None:
        return f.leaf(f.lookup("range"), (value.start, value.stop))
    if value.start is not None:
        return f.leaf(f.lookup("gte"), value.start)
    if value.stop is not None:
        return f.leaf(f.lookup("lte"), value.stop)
    return None


def _multiple(f: _Filter, value: Any) -> Spec | None:
    """``MultipleChoiceFilter.filter``: one predicate per value, ORed (ANDed when
    ``conjoined``), each negated for an ``exclude=True`` filter."""
    filter_ = f.filter
    if not value or filter_.is_noop(f.filterset.queryset, value):
        return None
    # Django iterates set(value); keep a stable order
    predicates = [_choice_predicate(f, v) for v in dict.fromkeys(value)]
    if filter_.conjoined:
        return and_all([Not(p) if filter_.exclude else p for p in predicates])
    combined = predicates[0] if len(predicates) == 1 else Or(*predicates)
    return Not(combined) if filter_.exclude else combined


def _choice_predicate(f: _Filter, value: Any) -> Spec:
    """One value's ``get_filter_predicate`` as a spec (its lookups ANDed)."""
    if value == f.filter.null_value:
        value = None
    predicate = f.filter.get_filter_predicate(value)
    leaves = [_leaf(f.model, f.name, key, v) for key, v in predicate.items()]
    if len(leaves) > 1 and any(
        crosses_many(f.model, path) for spec in leaves for path in spec.fields()
    ):
        raise Uncompilable(
            f.name,
            "several lookups in one filter() call through a to-many relation share "
            "one join, which per-leaf specs cannot express.",
        )
    return and_all(leaves)


# How each of django-filter's filter() methods compiles, by the method itself (a subclass that
# keeps its parent's filter() compiles as its parent).
_FILTER_KINDS: dict[Any, Callable[[_Filter, Any], Spec | None]] = {
    df.Filter.filter: _generic,
    df.ChoiceFilter.filter: _choice,
    df.MultipleChoiceFilter.filter: _multiple,
    df.RangeFilter.filter: _range,
    df.LookupChoiceFilter.filter: _lookup_choice,
}


def _date_range(model: type[models.Model], name: str, path: str, value: Any) -> Spec | None:
    """django-filter's ``DateRangeFilter`` (today, yesterday, week, month, year) as the
    :class:`Range` its ``filter()`` selects.

    As django-filter does: the day, month and year are those of ``timezone.now()`` (UTC); a
    ``__year``/``__month``/``__day`` lookup on a ``DateTimeField`` reads the column in the
    current time zone, so those bounds are midnights there; the past week's ``__gte``/``__lt``
    dates become midnights in the default time zone, as Django reads a date given for a
    datetime column.
    """
    if value in EMPTY_VALUES:
        return None
    field = model_field(model, path)
    moment = timezone.now()
    today = moment.date()
    if value == "today":
        low, high, zone = today, today + dt.timedelta(days=1), "current"
    elif value == "yesterday":
        low, high, zone = today - dt.timedelta(days=1), today, "current"
    elif value == "week":
        low = (moment - dt.timedelta(days=7)).date()
        high, zone = (moment + dt.timedelta(days=1)).date(), "default"
    elif value == "month":
        low = today.replace(day=1)
        high = (low + dt.timedelta(days=32)).replace(day=1)
        zone = "current"
    elif value == "year":
        low, high, zone = today.replace(month=1, day=1), today.replace(year=today.year + 1,
                                                                         month=1, day=1), "current"
    else:  # pragma: no cover - the form's choices allow nothing else
        raise Uncompilable(name, f"unknown DateRangeFilter choice {value!r}.")
    if isinstance(field, models.DateTimeField):
        tz = timezone.get_current_timezone() if zone == "current" else \
            timezone.get_default_timezone()

        def start(day: dt.date) -> Any:
            naive = dt.datetime.combine(day, dt.time())
            return timezone.make_aware(naive, tz) if settings.USE_TZ else naive

        return Range(path, gte=start(low), lt=start(high))
    if isinstance(field, models.DateField):
        return Range(path, gte=low, lt=high)
    raise Uncompilable(name, f"DateRangeFilter over {path!r}, which is not a date or datetime.")


def _pk_of(value: Any) -> Any:
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, list | tuple):
        return type(value)(_pk_of(v) for v in value)
    return value


def _leaf(model: type[models.Model], name: str, key: str, value: Any) -> Spec:
    """One lookup ``key=value`` as Django's ``filter(**{key: value})`` reads it."""
    try:
        path, lookup, field = split_lookup(model, key)
    except LookupError as exc:
        raise Uncompilable(name, str(exc)) from exc
    if lookup not in SUPPORTED_LOOKUPS:
        raise Uncompilable(
            name,
            f"the lookup {lookup!r} on {path!r} is not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_LOOKUPS))}).",
        )
    if value is None:
        if lookup in ("exact", "iexact"):
            return IsNull(path, True)
        raise ValueError("Cannot use None as a query value")
    if lookup == "isnull":
        return IsNull(path, value)
    if lookup in _TEXT_LOOKUPS:
        return _text_leaf(name, path, lookup, field, value)
    return _value_leaf(name, path, lookup, field, value)


def _checked(name: str, field: Any, lookup: str, value: Any) -> Any:
    """``value`` prepared by ``field`` for ``lookup``; a value a database's column cannot
    hold is a bad parameter ``name``."""
    if field is not None and not field.is_relation:
        # A path ending at a reverse one-to-one (``detail``) compares the related row's pk:
        # Django reads a model instance given for it as its pk.
        value = _pk_of(value)
    prepared = prepare(field, lookup, value)
    for item in prepared if isinstance(prepared, list | tuple) else (prepared,):
        why = check_value(field, item)
        if why:
            raise ValidationFailed({name: [why]})
    return prepared


_PATTERNS = {"contains": Contains, "startswith": StartsWith, "endswith": EndsWith}


def _text_leaf(name: str, path: str, lookup: str, field: Any, value: Any) -> Spec:
    """A text lookup (``iexact``, ``[i]contains``, ``[i]startswith``, ``[i]endswith``)."""
    if not isinstance(field, models.CharField | models.TextField):
        raise Uncompilable(
            name,
            f"the text lookup {lookup!r} on the non-text field "
            f"{path!r} depends on the database's text cast.",
        )
    text = str(value)
    if lookup == "iexact":
        return IEq(path, text)
    insensitive = lookup.startswith("i")
    return _PATTERNS[lookup.removeprefix("i")](path, text, case_insensitive=insensitive)


def _value_leaf(name: str, path: str, lookup: str, field: Any, value: Any) -> Spec:
    """``exact``, ``in``, ``range`` or a bound: the value prepared by the model field, and
    checked against what the databases' column can hold."""
    prepared = _checked(name, field, lookup, value)
    if lookup == "exact":
        return Eq(path, prepared)
    if lookup == "in":
        return In(path, [v for v in prepared if v is not None])
    if lookup == "range":
        low, high = prepared
        if low is None or high is None:  # BETWEEN NULL AND x: nothing
            return MatchNone()
        return Range(path, gte=low, lte=high)
    return Range(path, **{lookup: prepared})
