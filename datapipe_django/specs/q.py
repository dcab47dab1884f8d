"""The ``Q`` compilation of a leaf: the plain ``Q`` Django would build, or, for a path through a
to-many relation, a "some related row matches" condition of its own.

:meth:`Spec.to_q <datapipe_django.specs.Spec.to_q>` takes no model, so whether a path crosses
a to-many relation is asked of the app registry (:func:`~datapipe_django.specs.paths.maybe_many`);
a path no model reads that way compiles to the same SQL as ``filter(**lookups)``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q

from datapipe_django.specs.paths import maybe_many

__all__ = ["SomeRowMatches", "leaf_q"]


class SomeRowMatches:
    """A leaf's own "some related row matches" condition, usable as a child of ``Q``.

    Resolved against the outer query's model: ``EXISTS (SELECT 1 FROM <model> [joins] WHERE
    pk = outer.pk AND <the leaf's lookups>)``. The join lives inside the correlated subquery,
    so two leaves through the same to-many relation never share a join (Django's chained
    ``filter()`` semantics, and :meth:`Spec.matches`'); ``~`` gives ``NOT EXISTS``, which is
    :class:`Not`'s "no related row matches". The subquery is compiled on the outer query's
    connection, so any database alias works.
    """

    conditional = True

    def __init__(self, q: Q) -> None:
        self.q = q

    def __repr__(self) -> str:
        return f"_SomeRowMatches({self.q!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SomeRowMatches) and other.q == self.q

    def __hash__(self) -> int:
        return hash(("_SomeRowMatches", self.q))

    def __deepcopy__(self, memo: dict[int, Any]) -> SomeRowMatches:
        return self  # immutable

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        model = query.model
        inner = model._base_manager.filter(self.q, pk=OuterRef("pk"))
        return Exists(inner).resolve_expression(query, *args, **kwargs)


def leaf_q(path: str, **lookups: Any) -> Q:
    """``Q(**lookups)`` for one leaf on ``path``, through :class:`SomeRowMatches` when some
    model reads ``path`` through a to-many relation."""
    q = Q(**lookups)
    return Q(SomeRowMatches(q)) if maybe_many(path) else q
