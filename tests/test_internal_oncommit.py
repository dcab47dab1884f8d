"""``datapipe_django._internal.oncommit``: work batched per transaction and run once on commit
(the cache's invalidations and the index sync both use it)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from datapipe_django._internal import oncommit

# -- on commit ---------------------------------------------------------------------------------

class Work:
    """An on-commit callback collecting items; ``runs`` counts its calls."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1


def add(item: int, **kwargs) -> Work:
    work, _ = oncommit.batch("default", Work, lambda c: isinstance(c, Work), **kwargs)
    work.items.append(item)
    return work


@pytest.mark.django_db(transaction=True)
def test_writes_of_one_transaction_share_one_callback_run_once_on_commit():
    assert oncommit.waiting(connection) == []  # autocommit: nothing waits
    with transaction.atomic():
        first = add(1)
        connection.on_commit(lambda: None)  # someone else's callback in between
        assert add(2) is first
        assert [c for c in oncommit.waiting(connection) if isinstance(c, Work)] == [first]
        assert add(3, newest_only=True) is not first  # the newest callback is not a Work
    assert first.items == [1, 2] and first.runs == 1


@pytest.mark.django_db(transaction=True)
def test_a_savepoint_gets_its_own_callback_and_a_rollback_drops_it():
    with transaction.atomic():
        outer = add(1, this_level=True)
        try:
            with transaction.atomic():
                inner = add(2, this_level=True)
                assert inner is not outer
                assert oncommit.waiting(connection, this_level=True) == [inner]
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        assert oncommit.waiting(connection) == [outer]
        assert add(3) is outer  # joined at the outer level again
        with transaction.atomic():
            assert add(4) is outer  # without this_level, any level joins
    assert (outer.items, outer.runs, inner.runs) == ([1, 3, 4], 1, 0)
