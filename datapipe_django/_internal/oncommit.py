"""Work that waits for a transaction's commit, batched: the one reader of Django's private
list of on-commit callbacks.

``transaction.on_commit(func)`` keeps ``(savepoint ids, func, robust)`` entries in the
connection's ``run_on_commit`` list (private API, stable since Django 1.9; rolled-back
savepoints drop their entries, a commit runs and clears them). :func:`waiting` reads it;
:func:`batch` uses it to give every write of a transaction one callback to add to, instead of
one callback per row. Should Django rename the list, :func:`waiting` reads an empty one: each
write then registers its own callback (correct, only less batched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections, transaction

__all__ = ["batch", "waiting"]

T = TypeVar("T", bound=Callable[[], Any])


def waiting(connection: Any, *, this_level: bool = False) -> list[Any]:
    """The callbacks waiting for the commit of the transaction open on ``connection``, oldest
    first (none outside a transaction). ``this_level``: only those registered inside the
    current savepoint (a rollback to it would drop them)."""
    return [callback for _, callback in _entries(connection, this_level=this_level)]


def _entries(connection: Any, *, this_level: bool = False, newest_only: bool = False
             ) -> list[tuple[set[Any], Any]]:
    if not connection.in_atomic_block:
        return []
    entries = list(getattr(connection, "run_on_commit", None) or ())
    if newest_only:
        entries = entries[-1:]
    pairs = [(entry[0], entry[1]) for entry in entries]
    if this_level:
        here = set(connection.savepoint_ids)
        pairs = [pair for pair in pairs if pair[0] == here]
    return pairs


def batch(using: str, make: Callable[[], T], joinable: Callable[[Any], bool], *,
          newest_only: bool = False, this_level: bool = False) -> tuple[T, bool]:
    """The callback to add work to on ``using``'s open transaction: a waiting one that
    ``joinable(callback)`` accepts (with ``newest_only``, only if it is the newest of all;
    with ``this_level``, only if registered at the current savepoint level), or ``make()``
    registered with ``transaction.on_commit``. Returns it and whether it is new. Call only
    inside a transaction (``connection.in_atomic_block``)."""
    entries = _entries(connections[using], this_level=this_level, newest_only=newest_only)
    for _, callback in reversed(entries):
        if joinable(callback):
            return callback, False  # type: ignore[no-any-return]
    callback = make()
    transaction.on_commit(callback, using=using)
    return callback, True
