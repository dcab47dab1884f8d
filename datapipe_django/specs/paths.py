"""Field paths: the one resolver of ``a__b__c`` paths over a model.

A field path names model fields joined by ``__`` (``owner__name``, ``category__pk``), each
looked up on the model the previous relation leads to. Everything in the library that reads a
path goes through here: the specs (their ``Q``, their in-memory walk, the FilterSet's lookups),
the search compiler and fetcher, the cache's dependency discovery, the system checks, the
tenant attribute of invalidation and the expand parser.

* :func:`field_of` looks one name up on one model (``pk`` is the primary key; a reverse
  relation also by its accessor, ``item_set``, when asked);
* :func:`fields_along` walks the longest prefix of a path that names fields;
* :func:`resolve` compiles a path into :class:`Step` s the way Django's SQL reads it (to-many
  steps, the column a foreign key is read from, the field values are prepared by);
* :func:`split_lookup` cuts ``owner__name__icontains`` into path and lookup;
* :func:`path_error` says why a name is not a field path, with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import models
from django.db.models.constants import LOOKUP_SEP

if TYPE_CHECKING:
    from django.db.models import Field

__all__ = [
    "Step",
    "crosses_many",
    "field_of",
    "fields_along",
    "forward_prefixes",
    "head",
    "joined_models",
    "local_attname",
    "maybe_many",
    "model_field",
    "path_error",
    "resolve",
    "split_lookup",
    "suggestion",
]


def head(path: str) -> str:
    """The name of the model field a field path (``fund_account__contact__name``) starts
    from: ``fund_account``."""
    return path.split(LOOKUP_SEP, 1)[0]


def field_of(model: Any, name: str, *, accessors: bool = False) -> Any:
    """The field ``name`` of ``model`` (``pk``: its primary key), or None.

    With ``accessors``, a reverse relation is also found by its accessor name (``item_set``),
    as an instance attribute names it.
    """
    opts = model._meta
    if name == "pk":
        return opts.pk
    try:
        return opts.get_field(name)
    except FieldDoesNotExist:
        pass
    if accessors:
        for rel in opts.related_objects:
            if rel.get_accessor_name() == name:
                return rel
    return None


def suggestion(model: Any, name: str) -> str | None:
    """The field name of ``model`` closest to ``name`` (difflib), or None."""
    names = sorted(f.name for f in model._meta.get_fields())
    close = difflib.get_close_matches(name, names, n=1)
    return close[0] if close else None


def fields_along(model: Any, path: str | Sequence[str]) -> Iterator[tuple[str, Any]]:
    """``(name, field)`` for the longest prefix of ``path`` that names fields, each looked up on
    the model the previous relation leads to; a field that leads to no model ends the walk."""
    parts = path.split(LOOKUP_SEP) if isinstance(path, str) else path
    current = model
    for name in parts:
        if current is None:
            return
        field = field_of(current, name)
        if field is None:
            return
        yield name, field
        current = field.related_model if field.is_relation else None


def path_error(model: Any, path: str) -> str | None:
    """Why ``path`` is not a field path of ``model`` (naming the closest field), or None."""
    parts = path.split(LOOKUP_SEP)
    used = list(fields_along(model, parts))
    if len(used) == len(parts):
        return None
    owner = model
    for _, field in used[:-1]:
        owner = field.related_model
    if used and used[-1][1].related_model is None:
        return f"{owner._meta.label}.{used[-1][0]} is not a relation"
    current = used[-1][1].related_model if used else model
    missing = parts[len(used)]
    close = suggestion(current, missing)
    return (f"{current._meta.label} has no field {missing!r}"
            + (f" (did you mean {close!r}?)" if close else ""))


class Step:
    """One resolved step of a field path.

    ``kind`` is ``"value"`` (a column: ``attname`` is read), ``"fk"`` (a forward foreign key or
    one-to-one followed to ``related_model``), ``"reverse_one"`` (a reverse one-to-one, read
    through its accessor ``attname``), ``"many"`` (a to-many relation: any related row) or
    ``"attr"`` (no model field: an annotation or a property, read as is).
    """

    __slots__ = ("attname", "field", "kind", "name", "related_model")

    def __init__(
        self, kind: str, name: str, attname: str = "", field: Any = None, related_model: Any = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.attname = attname
        self.field = field
        self.related_model = related_model

    def __repr__(self) -> str:
        return f"Step({self.kind!r}, {self.name!r}, attname={self.attname!r})"


# What one name of a path resolves to: its steps, the model the next name is looked up on,
# the field values are prepared by, and how many names it consumed.
_Resolved = tuple[list[Step], Any, Any, int]


def _pk_step(model: Any) -> Step:
    pk = model._meta.pk
    return Step("value", "pk", attname=pk.attname, field=pk)


def _forward(field: Any, rest: Sequence[str]) -> _Resolved:
    """A forward foreign key or one-to-one: its own column when the path ends at it or at its
    target (``category``, ``category__pk``, ``category__id``), as Django trims that join."""
    target = field.target_field
    if not rest:
        return [Step("value", field.name, attname=field.attname, field=field)], None, field, 1
    if len(rest) == 1 and (rest[0] == target.name or (rest[0] == "pk" and target.primary_key)):
        return [Step("value", field.name, attname=field.attname, field=target)], None, target, 2
    step = Step("fk", field.name, attname=field.attname, field=field,
                related_model=field.related_model)
    return [step], field.related_model, None, 1


def _reverse_one(field: Any, rest: Sequence[str]) -> _Resolved:
    """A reverse one-to-one; ending there, Django compares the related row's pk."""
    related = field.related_model
    steps = [Step("reverse_one", field.name, attname=field.get_accessor_name(), field=field,
                  related_model=related)]
    if rest:
        return steps, related, None, 1
    return [*steps, _pk_step(related)], related, related._meta.pk, 1


def _to_many(field: Any, rest: Sequence[str]) -> _Resolved:
    """A many-to-many or reverse foreign key; ending there, Django compares the related pk."""
    related = field.related_model
    accessor = field.name if field.concrete else field.get_accessor_name()
    steps = [Step("many", field.name, attname=accessor, field=field, related_model=related)]
    if rest:
        return steps, related, None, 1
    return [*steps, _pk_step(related)], related, related._meta.pk, 1


def _resolve_name(model: Any, name: str, rest: Sequence[str], path: str) -> _Resolved:
    field = field_of(model, name)
    if field is None:  # not a model field (an annotation, a property): read the attribute
        return [Step("attr", name, attname=name)], None, None, 1
    if not field.is_relation:
        return [Step("value", name, attname=field.attname, field=field)], None, field, 1
    if field.concrete and (field.many_to_one or field.one_to_one):
        return _forward(field, rest)
    if field.one_to_one:
        return _reverse_one(field, rest)
    if field.many_to_many or field.one_to_many:
        return _to_many(field, rest)
    raise FieldError(f"Cannot follow {name!r} in {path!r} (a generic relation?).")


@functools.lru_cache(maxsize=1024)
def resolve(model: type[models.Model], path: str) -> tuple[tuple[Step, ...], Field | None]:
    """Compile ``path`` over ``model`` into steps, plus the model field values are prepared by
    (None for an attribute that is no field).

    The last step reads a column the way Django's SQL would: a path ending at a foreign key
    (``category``) or at its target (``category__pk``, ``category__id``) reads ``category_id``
    without loading the related row. Raises ``FieldError`` for a name after a non-relation
    and for a relation a path cannot follow (a generic relation).
    """
    parts = path.split(LOOKUP_SEP)
    steps: list[Step] = []
    current: Any = model
    final: Any = None
    index = 0
    while index < len(parts):
        if current is None:
            raise FieldError(
                f"Cannot resolve {path!r}: {parts[index]!r} follows a non-relation field.")
        found, current, final, used = _resolve_name(current, parts[index], parts[index + 1:],
                                                    path)
        steps.extend(found)
        index += used
    return tuple(steps), final


def model_field(model: type[models.Model], path: str) -> Field | None:
    """The model field whose column ``path`` (``"merchant_id"``, ``"owner__name"``, ``"pk"``)
    compares, as Django's SQL reads it; None for an attribute that is no field."""
    return resolve(model, path)[1]


@functools.lru_cache(maxsize=1024)
def crosses_many(model: type[models.Model], path: str) -> bool:
    """Whether ``path`` over ``model`` follows a to-many relation (False if it does not resolve)."""
    try:
        steps, _ = resolve(model, path)
    except FieldError:
        return False
    return any(step.kind == "many" for step in steps)


@functools.lru_cache(maxsize=4096)
def maybe_many(path: str) -> bool:
    """Whether some installed model reads ``path`` through a to-many relation (for a compiler
    that knows no model, as :meth:`Spec.to_q <datapipe_django.specs.Spec.to_q>`)."""
    from django.apps import apps

    return any(crosses_many(model, path) for model in apps.get_models(include_auto_created=True))


def _followable(field: Any) -> bool:
    """Whether a relation is one a path can follow (not a generic relation)."""
    return bool(field.many_to_one or field.one_to_one or field.many_to_many or field.one_to_many)


@functools.lru_cache(maxsize=1024)
def split_lookup(model: type[models.Model], key: str) -> tuple[str, str, Field | None]:
    """Split ``"owner__name__icontains"`` into ``("owner__name", "icontains", <name field>)``.

    The path is the longest prefix that names fields, the rest is the lookup (``exact`` when
    there is none). Raises ``FieldError`` (with the closest field name) when the first name is
    no field, ``LookupError`` for a relation a spec cannot follow (a generic relation).
    """
    parts = key.split(LOOKUP_SEP)
    used = list(fields_along(model, parts))
    if not used:
        close = suggestion(model, parts[0])
        raise FieldError(f"Cannot resolve keyword {parts[0]!r} into field of {model.__name__}."
                         + (f" Did you mean {close!r}?" if close else ""))
    for name, field in used:
        if field.is_relation and not _followable(field):
            raise LookupError(f"{name!r} is not a relation a spec can follow")
    path = LOOKUP_SEP.join(name for name, _ in used)
    lookup = LOOKUP_SEP.join(parts[len(used):]) or "exact"
    return path, lookup, resolve(model, path)[1]


def joined_models(model: type[models.Model], path: str) -> frozenset[type[models.Model]]:
    """Models a filter on ``path`` reads besides ``model`` (its joins, a many-to-many's
    through model included), e.g. ``owner__name`` → ``{Owner}``. A path ending at a local
    foreign key (``owner``) reads no other table."""
    found: set[type[models.Model]] = set()
    parts = path.split(LOOKUP_SEP)
    for index, (_, field) in enumerate(fields_along(model, parts)):
        joined = _joined_by(field, last=index == len(parts) - 1)
        if not joined:
            break
        found.update(joined)
    return frozenset(found)


def _joined_by(field: Any, *, last: bool) -> list[type[models.Model]]:
    """The tables reading through ``field`` joins (none for a column of the current table)."""
    related: Any = field.related_model if field.is_relation else None
    if not (isinstance(related, type) and issubclass(related, models.Model)):
        return []
    if last and field.concrete and not field.many_to_many:
        return []  # the local column
    joined = [related._meta.concrete_model or related]
    through = getattr(getattr(field, "remote_field", None), "through", None)
    if field.many_to_many and isinstance(through, type):
        joined.append(through)
    return joined


def forward_prefixes(model: type[models.Model], paths: Iterable[str]) -> list[str]:
    """The forward foreign-key/one-to-one prefixes of ``paths`` (what ``select_related``
    takes), sorted: ``owner__name`` → ``owner``."""
    found: set[str] = set()
    for path in paths:
        names: list[str] = []
        for name, field in fields_along(model, path.split(LOOKUP_SEP)[:-1]):
            if not (field.is_relation and field.concrete
                    and (field.many_to_one or field.one_to_one)):
                break
            names.append(name)
        if names:
            found.add(LOOKUP_SEP.join(names))
    return sorted(found)


def local_attname(model: type[models.Model], path: str | None) -> str | None:
    """The instance attribute holding ``path`` when it names a local concrete field
    (``merchant``, ``merchant_id``: ``merchant_id``); None otherwise (``merchant__slug``)."""
    if not path or LOOKUP_SEP in path:
        return None
    field = field_of(model, path)
    if field is None or not getattr(field, "concrete", False) or field.many_to_many:
        return None
    return field.attname  # type: ignore[no-any-return]
