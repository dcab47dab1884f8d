"""The in-memory predicate: how :meth:`Spec.matches <datapipe_django.specs.Spec.matches>` reads
a field path on an object and prepares the values it compares.

The semantics are SQL's, as Django generates it: a path is followed step by step (a missing
related row, NULL or dangling, reads as None; a to-many relation yields each related row's
value, any of which may match); values are prepared with the model field's own lookup, as
Django's SQL compiler does; case-insensitive comparisons fold like PostgreSQL's ``UPPER()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldError, ObjectDoesNotExist
from django.db import models
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import Col

from datapipe_django.specs.paths import Step, resolve

if TYPE_CHECKING:
    from django.db.models import Field

__all__ = ["pg_upper", "prepare", "target_field", "values_at"]


def pg_upper(text: str) -> str:
    """Upper-case ``text`` one character at a time, as PostgreSQL's ``UPPER()`` does.

    PostgreSQL maps each character to a single character (the simple case mapping): ``ß`` stays
    ``ß`` and ``ﬁ`` stays ``ﬁ`` (Python's ``str.upper`` gives ``SS`` and ``FI``), and a Greek
    letter with ypogegrammeni takes its title-case form.
    """
    out = []
    for char in text:
        upper = char.upper()
        if len(upper) != 1:
            title = char.title()
            upper = title if len(title) == 1 else char
        out.append(upper)
    return "".join(out)


def values_at(obj: Any, path: str) -> Iterator[Any]:
    """The value(s) ``path`` reads on ``obj``: a model instance (through :func:`resolve`'s
    steps), a mapping or any object; None where the walk stops at a missing row."""
    if isinstance(obj, models.Model):
        return _walk_steps(obj, resolve(type(obj), path)[0], 0)
    return _walk(obj, tuple(path.split(LOOKUP_SEP)))


def _walk(obj: Any, parts: tuple[str, ...]) -> Iterator[Any]:
    """Yield the value(s) at ``parts`` on a plain object or mapping; None stops the walk."""
    if not parts:
        yield obj
        return
    if obj is None:
        yield None
        return
    if isinstance(obj, models.Model):
        yield from values_at(obj, LOOKUP_SEP.join(parts))
        return
    head, rest = parts[0], parts[1:]
    value = obj.get(head) if isinstance(obj, Mapping) else getattr(obj, head)
    if isinstance(value, models.Manager):
        yield from _each_related(list(value.all()), lambda item: _walk(item, rest))
        return
    yield from _walk(value, rest)


def _each_related(related: list[Any], walk: Any) -> Iterator[Any]:
    """A to-many step: each related row's values; no row reads as None."""
    if not related:
        yield None
    for item in related:
        yield from walk(item)


def _follow(obj: Any, step: Step) -> Any:
    """The value one single-valued step reads on ``obj``: a column, or the related row (None
    when it is missing: a NULL or dangling foreign key, no reverse one-to-one row)."""
    if step.kind in ("value", "attr"):
        return getattr(obj, step.attname)
    if step.kind == "fk" and getattr(obj, step.attname) is None:
        return None
    try:
        return getattr(obj, step.name if step.kind == "fk" else step.attname)
    except ObjectDoesNotExist:  # the SQL join finds no row
        return None


def _walk_steps(obj: Any, steps: tuple[Step, ...], index: int) -> Iterator[Any]:
    if index == len(steps):
        yield obj
        return
    if obj is None:
        yield None
        return
    step = steps[index]
    if step.kind == "many":  # any related row may satisfy the leaf (Django's join semantics)
        related = list(getattr(obj, step.attname).all())
        yield from _each_related(related, lambda item: _walk_steps(item, steps, index + 1))
        return
    yield from _walk_steps(_follow(obj, step), steps, index + 1)


def prepare(field: Field | None, lookup: str, value: Any) -> Any:
    """Prepare ``value`` for ``lookup`` on ``field`` exactly as Django's lookup class does."""
    if field is None:
        return value
    lookup_class = field.get_lookup(lookup)
    if lookup_class is None:
        raise FieldError(f"Unsupported lookup {lookup!r} for {type(field).__name__}.")
    return lookup_class(Col("_", field), value).rhs


def target_field(obj: Any, path: str) -> Field | None:
    """The model field ``path`` compares on a model instance ``obj`` (None on other objects)."""
    if isinstance(obj, models.Model):
        return resolve(type(obj), path)[1]
    return None
