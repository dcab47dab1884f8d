"""Total orderings, merge keys, keyset predicates and signed cursors.

One :class:`Ordering` drives every source: the SQL ``ORDER BY`` (NULLs last in both
directions, on every backend), the in-memory sort key used to merge streams from several
sources, the keyset predicate that turns a cursor into a ``WHERE`` clause, and the values a
cursor carries. Keeping the four together is what makes merged pages exact.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import total_ordering
from typing import Any, cast

from django.core import signing
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from django.db.models import F, Q
from django.db.models.expressions import OrderBy

from datapipe_django.errors import ValidationFailed

__all__ = ["RELEVANCE", "SCORE_ATTR", "Cursor", "OrderField", "Ordering", "SortKey"]

#: The ``ordering`` value that orders a search by relevance (the serving source's score).
RELEVANCE = "relevance"
#: The attribute a ranking source sets on each instance it returns: its score for the request.
SCORE_ATTR = "_datapipe_score"


@dataclass(frozen=True)
class OrderField:
    """One column of a total ordering."""

    name: str          # the model field name, as written in ``ordering``
    attname: str       # the attribute holding the value on an instance (``category_id``)
    descending: bool
    nullable: bool
    field: models.Field[Any, Any]

    def __str__(self) -> str:
        return f"-{self.name}" if self.descending else self.name


@total_ordering
class SortKey:
    """Comparable key of one row: per field, NULLs last, descending fields reversed."""

    __slots__ = ("descending", "values")

    def __init__(self, values: tuple[Any, ...], descending: tuple[bool, ...]) -> None:
        self.values = values
        self.descending = descending

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SortKey) and self.values == other.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __lt__(self, other: SortKey) -> bool:
        for a, b, desc in zip(self.values, other.values, self.descending, strict=True):
            if a == b:
                continue
            if a is None:
                return False
            if b is None:
                return True
            return bool(a > b) if desc else bool(a < b)
        return False

    def __repr__(self) -> str:
        return f"SortKey({self.values!r})"


class Ordering:
    """A total ordering of a model's rows: the given fields, then the primary key.

    ``Ordering.for_model(Payout, ("-created_at",))`` validates each name against the model
    (concrete, local fields only) and appends the pk unless already present, in the direction
    of the last field given.
    """

    def __init__(self, model: type[models.Model], fields: Sequence[OrderField], *,
                 relevance: bool = False) -> None:
        self.model = model
        self.fields = tuple(fields)
        #: Best first by the serving source's score (``SCORE_ATTR``), then the pk ascending.
        self.relevance = relevance
        self._descending = tuple(f.descending for f in self.fields)
        self._attnames = tuple(f.attname for f in self.fields)

    @classmethod
    def for_model(
        cls, model: type[models.Model], names: Iterable[str], *, owner: str = "Pipeline"
    ) -> Ordering:
        pk = cast("models.Field[Any, Any]", model._meta.pk)
        result: list[OrderField] = []
        seen: set[str] = set()
        for raw in names:
            descending = raw.startswith("-")
            name = raw.lstrip("-+")
            field = cls._resolve(model, name, owner=owner)
            if field.attname in seen:
                continue
            seen.add(field.attname)
            result.append(
                OrderField(name, field.attname, descending, bool(field.null) and not
                           field.primary_key, field)
            )
            if field.primary_key:
                break  # the pk is unique: anything after it is dead weight
        if pk.attname not in seen:
            descending = result[-1].descending if result else False
            result.append(OrderField(pk.name, pk.attname, descending, False, pk))
        return cls(model, result)

    @classmethod
    def by_relevance(cls, model: type[models.Model]) -> Ordering:
        """Best first by the source's score (the ``SCORE_ATTR`` of each row: an engine's
        ``_score``, PostgreSQL's ``ts_rank_cd``), then the pk ascending. Only a source that
        ranks can serve it (see ``BaseFetcher.can_rank``), and only one source serves a page:
        scores of different sources do not compare."""
        pk = cast("models.Field[Any, Any]", model._meta.pk)
        score = models.FloatField(name=RELEVANCE)
        score.attname = SCORE_ATTR
        return cls(model, [OrderField(RELEVANCE, SCORE_ATTR, True, False, score),
                           OrderField(pk.name, pk.attname, False, False, pk)], relevance=True)

    @staticmethod
    def _resolve(model: type[models.Model], name: str, *, owner: str) -> models.Field[Any, Any]:
        if name == "pk":
            return cast("models.Field[Any, Any]", model._meta.pk)
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            raise ImproperlyConfigured(
                f"{owner}: ordering field {name!r} is not a field of "
                f"{model._meta.label}. Use a concrete field of the model."
            ) from None
        if not getattr(field, "concrete", False) or field.many_to_many or field.one_to_many:
            raise ImproperlyConfigured(
                f"{owner}: ordering field {name!r} of {model._meta.label} is not a concrete "
                f"column. Order by a local field (or its `_id` for a foreign key)."
            )
        return field  # type: ignore[return-value]

    # -- what each source needs ----------------------------------------------------------
    def order_by(self) -> list[OrderBy]:
        """``ORDER BY`` expressions with NULLs last, identical on every backend."""
        # NULLS LAST only where NULLs can occur: on a NOT NULL column the plain direction lets
        # PostgreSQL walk a btree index (backwards) instead of sorting every matching row.
        return [
            (F(f.attname).desc(nulls_last=f.nullable or None) if f.descending
             else F(f.attname).asc(nulls_last=f.nullable or None))
            for f in self.fields
        ]

    def values(self, obj: Any) -> tuple[Any, ...]:
        if self.relevance:  # a row without a score (no ranking source) sorts last
            return (getattr(obj, SCORE_ATTR, None), *(getattr(obj, a) for a in self._attnames[1:]))
        return tuple(getattr(obj, a) for a in self._attnames)

    def key(self, obj: Any) -> SortKey:
        return SortKey(self.values(obj), self._descending)

    def key_of_values(self, values: tuple[Any, ...]) -> SortKey:
        return SortKey(values, self._descending)

    def after_q(self, values: Sequence[Any]) -> Q:
        """The keyset predicate: rows strictly after ``values`` in this ordering."""
        # One clause per field: the fields before it equal, it strictly after. NULLs sort
        # last: nothing comes after NULL within its prefix.
        clauses = [self._after_at(i, values) for i in range(len(self.fields))
                   if values[i] is not None]
        if not clauses:
            return Q(pk__in=[])
        result = clauses[0]
        for clause in clauses[1:]:
            result |= clause
        first, value = self.fields[0], values[0]
        if not first.nullable and value is not None and len(clauses) > 1:
            # Redundant but index-friendly: a range on the leading column lets the database
            # start the scan at the cursor instead of filtering every earlier row.
            result &= Q(**{f"{first.attname}__{'lte' if first.descending else 'gte'}": value})
        return result

    def _after_at(self, i: int, values: Sequence[Any]) -> Q:
        """Rows equal to ``values`` on the fields before the ``i``-th, after it on that one."""
        field = self.fields[i]
        op = "lt" if field.descending else "gt"
        after = Q(**{f"{field.attname}__{op}": values[i]})
        if field.nullable:
            after |= Q(**{f"{field.attname}__isnull": True})
        prefix = [
            Q(**{f"{f.attname}__isnull": True}) if v is None else Q(**{f.attname: v})
            for f, v in zip(self.fields[:i], values[:i], strict=True)
        ]
        return Q(*prefix, after)

    def is_after(self, obj: Any, values: Sequence[Any]) -> bool:
        """In-memory twin of :meth:`after_q`."""
        return self.key_of_values(tuple(values)) < self.key(obj)

    @property
    def signature(self) -> list[str]:
        return [str(f) for f in self.fields]

    def __str__(self) -> str:
        return ",".join(self.signature)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Ordering) and other.model is self.model
                and other.signature == self.signature and other.relevance == self.relevance)

    def __hash__(self) -> int:
        return hash((self.model, tuple(self.signature)))


# -- cursors ------------------------------------------------------------------------------

def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()  # full precision, unlike DjangoJSONEncoder
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


class Cursor:
    """Signed, opaque position in an ordering: the ordering values of the last row seen."""

    SALT = "datapipe_django.cursor"

    @classmethod
    def encode(cls, ordering: Ordering, obj: Any, *, namespace: str) -> str:
        payload = {"o": ordering.signature, "v": [_encode(v) for v in ordering.values(obj)]}
        return signing.dumps(payload, salt=f"{cls.SALT}:{namespace}")

    @classmethod
    def decode(cls, token: str, ordering: Ordering, *, namespace: str) -> tuple[Any, ...]:
        """The ordering values a cursor carries; :class:`ValidationFailed` for a bad one."""
        try:
            payload = signing.loads(token, salt=f"{cls.SALT}:{namespace}")
            if payload["o"] != ordering.signature:
                raise ValidationFailed(
                    {"cursor": ["This cursor was issued for another ordering."]}, op="cursor"
                )
            raw = payload["v"]
            if not isinstance(raw, list) or len(raw) != len(ordering.fields):
                raise ValueError("wrong arity")
            return tuple(
                None if v is None else f.field.to_python(v)
                for f, v in zip(ordering.fields, raw, strict=True)
            )
        except ValidationFailed:
            raise
        except Exception as exc:  # BadSignature, malformed payload, to_python errors
            raise ValidationFailed(
                {"cursor": ["Invalid cursor."]}, op="cursor", cause=exc
            ) from exc
