"""Binding a request's raw parameters to a FilterSet, cheaply, and compiling them:
:func:`compile_filterset`.

Binding runs no query (a model choice filter keyed by the primary key checks the key's type
only: :class:`_KeyChoiceField`), binds the request to a subclass holding only the filters it
names (the narrowing), and shares the form fields that cannot depend on the instance (the
form-class reuse). The bound FilterSet is then compiled by
:func:`~datapipe_django.specs.filterset.spec_from_filterset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import translation
from django.utils.datastructures import MultiValueDict
from django_filters import filters as df
from django_filters.constants import EMPTY_VALUES
from django_filters.filterset import BaseFilterSet

from datapipe_django.errors import ValidationFailed
from datapipe_django.request import quote
from datapipe_django.specs.filterset import _compile_filter, _errors_of, spec_from_filterset
from datapipe_django.specs.parameters import check_value, filter_parameters, is_csv
from datapipe_django.specs.tree import Spec

__all__ = ["compile_filterset"]


def compile_filterset(
    filterset_class: type[BaseFilterSet],
    data: Mapping[str, Any],
    *,
    request: Any = None,
) -> Spec:
    """Bind raw parameters to ``filterset_class``, validate them and return their spec.

    ``data`` is a ``QueryDict`` (as in a request) or a plain mapping whose values may be lists
    for multi-valued parameters (``{"status__in": ["queued", "processed"]}``); a list given to
    a comma-separated (``BaseInFilter``/``BaseRangeFilter``) parameter is joined with commas.
    Raises :class:`~datapipe_django.errors.ValidationFailed` naming each bad parameter, and
    :class:`Uncompilable` as :func:`spec_from_filterset` does. Runs no query: a
    ``ModelChoiceFilter`` (or ``ModelMultipleChoiceFilter``) keyed by the primary key checks
    the key's type only, and an integer past a column's range on one of the databases is a bad
    parameter.
    """
    model = filterset_class._meta.model
    if model is None:
        raise TypeError(f"{filterset_class.__name__} has no Meta.model.")
    data = _as_multivalue(filterset_class, data)
    filterset = _narrowed(filterset_class, data)(
        data=data,
        queryset=model._default_manager.none(),
        request=request,
    )
    _reuse_form_fields(filterset)
    _key_only_fields(filterset)
    if not filterset.is_valid():
        raise ValidationFailed(_errors_of(filterset.form))
    return spec_from_filterset(filterset)


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
_MAX_NARROWED = 512
_WHOLE = ("__init__", "get_form_class", "form", "is_valid", "errors")


def _narrowed(cls: type[BaseFilterSet], data: Any) -> type[BaseFilterSet]:
    """``cls``, or its subclass with only the filters ``data`` names (and those that always
    act), when binding that gives the same form errors and the same spec."""
    if cls not in _NARROWING:
        if len(_NARROWING) >= _MAX_NARROWED:  # FilterSet classes made on the fly: bind whole
            return cls
        _NARROWING[cls] = _narrowing_plan(cls)
    plan = _NARROWING[cls]
    if plan is None:
        return cls
    parameters, always = plan
    named = frozenset(name for name, params in parameters.items()
                      if name in always or any(p in data for p in params))
    if len(named) == len(parameters):
        return cls
    return _NARROWED.get((cls, named)) or _narrow(cls, named)


def _narrow(cls: type[BaseFilterSet], named: frozenset[str]) -> type[BaseFilterSet]:
    """The subclass of ``cls`` with only the filters ``named`` (made once per set of names)."""
    if len(_NARROWED) >= _MAX_NARROWED:
        return cls
    narrowed: type[BaseFilterSet] = type(cls.__name__, (cls,), {
        "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    narrowed.base_filters = {name: f for name, f in cls.base_filters.items() if name in named}
    return _NARROWED.setdefault((cls, named), narrowed)


def _narrowing_plan(cls: type[BaseFilterSet]) -> tuple[dict[str, list[str]],
                                                       frozenset[str]] | None:
    """(each filter's parameters, the filters that act without any), or None when ``cls``
    must be bound whole."""
    from django import forms

    if any(getattr(cls, attr) is not getattr(BaseFilterSet, attr) for attr in _WHOLE) or (
            cls._meta.form is not forms.Form):
        return None
    model = cls._meta.model
    try:
        empty = cls(data=MultiValueDict(), queryset=model._default_manager.none())
        form = empty.form
        form.is_valid()
    except Exception:  # a filter that needs a request to build (a callable queryset...)
        return None
    always = set(form.errors)
    for name, filter_ in cls.base_filters.items():
        if filter_.extra.get("required"):
            always.add(name)
        elif name in form.cleaned_data:
            try:
                acts = _compile_filter(empty, model, name, empty.filters[name],
                                       form.cleaned_data[name]) is not None
            except Exception:  # whatever it is, the filter must be bound
                acts = True
            if acts:
                always.add(name)
    return filter_parameters(cls), frozenset(always)


# django-filter builds a new form class, and every field of it, for each FilterSet instance:
# most of the cost of binding a request's parameters. A field that cannot depend on the
# instance is built once per FilterSet class (and language, for its label) and shared by the
# form classes; Django forms deep-copy their fields per form, so sharing them is safe.
_STATIC_FIELDS: dict[tuple[type[BaseFilterSet], str | None], dict[str, Any]] = {}
_FORM_CLASSES: dict[tuple[type[BaseFilterSet], str | None], type] = {}
_STATIC_FILTERS: dict[type[BaseFilterSet], frozenset[str] | None] = {}
_STATIC_FIELD_OWNERS = (df.Filter, df.NumberFilter, df.LookupChoiceFilter)


def _reuse_form_fields(filterset: BaseFilterSet) -> None:
    cls = type(filterset)
    if cls not in _STATIC_FILTERS:
        _STATIC_FILTERS[cls] = _static_filters(cls)
    static = _STATIC_FILTERS[cls]
    if static is None:
        return
    key = (cls, translation.get_language())
    if len(static) == len(filterset.filters):
        form_class = _FORM_CLASSES.get(key)
        if form_class is None:
            form_class = _FORM_CLASSES.setdefault(key, filterset.get_form_class())
        filterset.get_form_class = lambda: form_class  # type: ignore[method-assign]
        return
    fields = _STATIC_FIELDS.get(key)
    if fields is None:
        fields = {name: filterset.filters[name].field for name in static}
        fields = _STATIC_FIELDS.setdefault(key, fields)

    def get_form_class() -> type:
        form_fields = {}
        for name, filter_ in filterset.filters.items():  # in declaration order
            shared = fields.get(name)
            form_fields[name] = filter_.field if shared is None else shared
        return type(f"{cls.__name__}Form", (cls._meta.form,), form_fields)

    # An instance attribute: ``BaseFilterSet.form`` calls ``self.get_form_class()``.
    filterset.get_form_class = get_form_class  # type: ignore[method-assign]


def _static_filters(cls: type[BaseFilterSet]) -> frozenset[str] | None:
    """The names of ``cls``'s filters whose form field is the same for every instance.

    None when ``cls`` overrides ``__init__`` or ``get_form_class`` (either may shape the
    filters per request). Not static: a filter with a callable ``queryset=`` (it takes the
    request), ``AllValuesFilter`` (its choices come from the database), and any filter with
    its own ``field`` property.
    """
    if cls.__init__ is not BaseFilterSet.__init__ or (
        cls.get_form_class is not BaseFilterSet.get_form_class
    ):
        return None
    static = set()
    for name, filter_ in cls.base_filters.items():
        owner = next(k for k in type(filter_).__mro__ if "field" in vars(k))
        if owner is df.QuerySetRequestMixin:
            if not callable(getattr(filter_, "queryset", None)):
                static.add(name)
        elif owner in _STATIC_FIELD_OWNERS:
            static.add(name)
    return frozenset(static)


def _as_multivalue(filterset_class: type[BaseFilterSet], data: Mapping[str, Any]) -> Any:
    if isinstance(data, MultiValueDict):  # QueryDict included
        return data
    result: MultiValueDict = MultiValueDict()
    for key, value in data.items():
        if isinstance(value, list | tuple):
            if is_csv(filterset_class.base_filters.get(key)):
                result[key] = ",".join(str(v) for v in value)
            else:
                result.setlist(key, list(value))
        else:
            result[key] = value
    return result


class _KeyChoiceField(forms.Field):
    """A ``ModelChoiceField`` that checks the key's type only: no query.

    Which rows match is the sources' business (within the tenant), so another tenant's id
    reads exactly like a missing one. The value is an unsaved instance carrying the key.
    """

    def __init__(self, original: forms.ModelChoiceField, *, multiple: bool) -> None:
        super().__init__(required=False, widget=original.widget)
        self.model = original.queryset.model  # type: ignore[union-attr]
        self.key = self.model._meta.pk
        self.null_label = getattr(original, "null_label", None)
        self.null_value = getattr(original, "null_value", "null")
        self.multiple = multiple

    def to_python(self, value: Any) -> Any:
        if value in EMPTY_VALUES:
            return [] if self.multiple else None
        if not self.multiple:
            return self._choice(value)
        values = list(value) if isinstance(value, list | tuple) else [value]
        return self._in_key_order([self._choice(raw) for raw in values
                                   if raw not in EMPTY_VALUES])

    def _in_key_order(self, out: list[Any]) -> list[Any]:
        """The choices in key order, null last (as django-filter's queryset gives them)."""
        keys = sorted({o.pk for o in out if o != self.null_value})
        nulls = [self.null_value] if self.null_value in out else []
        return [self.model(**{self.key.attname: k}) for k in keys] + nulls

    def _choice(self, raw: Any) -> Any:
        """One raw value as an unsaved instance carrying its key (or the null value)."""
        if self.null_label is not None and raw == self.null_value:
            return self.null_value
        try:
            key = self.key.to_python(raw)
        except DjangoValidationError:
            raise DjangoValidationError(
                f"Select a valid choice: {quote(raw)} is not a valid key.",
                code="invalid_choice") from None
        why = check_value(self.key, key)
        if why:
            raise DjangoValidationError(why, code="invalid_choice")
        return self.model(**{self.key.attname: key})


def _key_only_fields(filterset: BaseFilterSet) -> None:
    """Swap the form's model choice fields for :class:`_KeyChoiceField` (no query)."""
    form = filterset.form
    for name, field in list(form.fields.items()):
        if not isinstance(field, forms.ModelChoiceField):
            continue
        to_field = getattr(field, "to_field_name", None)
        model = field.queryset.model  # type: ignore[union-attr]
        if to_field not in (None, model._meta.pk.name, model._meta.pk.attname):
            continue  # keyed by another field: django-filter's own check
        form.fields[name] = _KeyChoiceField(
            field, multiple=isinstance(field, forms.ModelMultipleChoiceField))
