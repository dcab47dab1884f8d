"""``datapipe_django.paging``: total orderings, the merge key, the keyset predicate and signed
cursors. The keyset predicate (``after_q``, SQL) and its in-memory twin (``is_after``) must
select the same rows for any rows and any position, NULLs included; a cursor carries exactly
the ordering values of its row and nothing a client can forge."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datapipe_django.errors import ValidationFailed
from datapipe_django.paging import SCORE_ATTR, Cursor, Ordering
from tests.testapp.models import Item

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ORDERINGS = [("-created_at",), ("score",), ("-score", "name"), ("amount", "-created_at"),
             ("name", "-id"), ("id",)]


def make(pk: int, *, minutes: int = 0, score: int | None = None, name: str = "n",
         amount: int = 0) -> Item:
    return Item(id=pk, tenant="t1", name=name, status="queued", amount=amount,
                created_at=BASE + dt.timedelta(minutes=minutes), day=BASE.date(), score=score)


class TestOrdering:
    def test_the_pk_ends_every_ordering_in_the_last_direction(self) -> None:
        assert Ordering.for_model(Item, ["-created_at"]).signature == ["-created_at", "-id"]
        assert Ordering.for_model(Item, ["score"]).signature == ["score", "id"]
        assert Ordering.for_model(Item, []).signature == ["id"]

    def test_nothing_after_the_pk_and_no_field_twice(self) -> None:
        assert Ordering.for_model(Item, ["id", "name"]).signature == ["id"]
        assert Ordering.for_model(Item, ["name", "-name"]).signature == ["name", "id"]

    def test_an_unknown_field_is_a_configuration_error_naming_it(self) -> None:
        with pytest.raises(ImproperlyConfigured, match="nope"):
            Ordering.for_model(Item, ["nope"])

    def test_nulls_sort_last_in_both_directions(self) -> None:
        rows = [make(1, score=2), make(2), make(3, score=1), make(4)]
        for names, expected in ((["score"], [3, 1, 2, 4]), (["-score"], [1, 3, 4, 2])):
            order = Ordering.for_model(Item, names)
            assert [r.pk for r in sorted(rows, key=order.key)] == expected

    def test_relevance_is_best_first_then_the_pk_ascending(self) -> None:
        rows = [make(pk) for pk in (1, 2, 3)]
        for row, score in zip(rows, (0.5, 2.0, 2.0), strict=True):
            setattr(row, SCORE_ATTR, score)
        order = Ordering.by_relevance(Item)
        assert order.relevance
        assert [r.pk for r in sorted(rows, key=order.key)] == [2, 3, 1]


rows_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.none() | st.integers(0, 2), st.sampled_from("abB"),
              st.integers(0, 2)),
    max_size=15,
)


@pytest.mark.django_db
@hsettings(max_examples=60, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=rows_strategy, ordering=st.sampled_from(ORDERINGS), data=st.data())
def test_after_q_and_is_after_select_the_same_rows(values: list, ordering: tuple[str, ...],
                                                   data: st.DataObject) -> None:
    Item.objects.all().delete()
    rows = Item.objects.bulk_create([make(i + 1, minutes=m, score=s, name=n, amount=a)
                                     for i, (m, s, n, a) in enumerate(values)])
    order = Ordering.for_model(Item, ordering)
    anchor = data.draw(st.sampled_from(rows) if rows else st.just(make(1)), label="anchor")
    position = order.values(anchor)
    in_sql = list(Item.objects.filter(order.after_q(position)).order_by(*order.order_by())
                  .values_list("pk", flat=True))
    in_memory = [r.pk for r in sorted(rows, key=order.key) if order.is_after(r, position)]
    assert in_sql == in_memory
    assert anchor.pk not in in_sql


class TestCursor:
    order = Ordering.for_model(Item, ["-score", "created_at"])

    def test_it_carries_the_ordering_values_of_its_row(self) -> None:
        for row in (make(7, score=3, minutes=5), make(8)):
            token = Cursor.encode(self.order, row, namespace="p")
            assert Cursor.decode(token, self.order, namespace="p") == self.order.values(row)

    def test_datetimes_keep_their_microseconds(self) -> None:
        row = make(1, score=1)
        row.created_at = BASE + dt.timedelta(microseconds=7)
        values = Cursor.decode(Cursor.encode(self.order, row, namespace="p"), self.order,
                               namespace="p")
        assert values[1] == row.created_at

    @pytest.mark.parametrize("token", ["", "garbage", "a:b:c", "x" * 500])
    def test_a_forged_cursor_is_invalid(self, token: str) -> None:
        with pytest.raises(ValidationFailed) as info:
            Cursor.decode(token, self.order, namespace="p")
        assert info.value.errors == {"cursor": ["Invalid cursor."]}

    def test_a_cursor_of_another_pipeline_is_invalid(self) -> None:
        token = Cursor.encode(self.order, make(1, score=1), namespace="p")
        with pytest.raises(ValidationFailed):
            Cursor.decode(token, self.order, namespace="other")

    def test_a_cursor_of_another_ordering_says_so(self) -> None:
        token = Cursor.encode(self.order, make(1, score=1), namespace="p")
        with pytest.raises(ValidationFailed, match="cursor") as info:
            Cursor.decode(token, Ordering.for_model(Item, ["name"]), namespace="p")
        assert "another ordering" in info.value.errors["cursor"][0]

    def test_a_signed_payload_of_the_wrong_shape_is_invalid(self) -> None:
        token = signing.dumps({"o": self.order.signature, "v": [1]},
                              salt=f"{Cursor.SALT}:p")
        with pytest.raises(ValidationFailed):
            Cursor.decode(token, self.order, namespace="p")
