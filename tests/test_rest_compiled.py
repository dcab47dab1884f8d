"""The compiled read path (``datapipe_django.rest.compiled``): DRF's output, for any row.

The property: for random rows of every model the test app and the example render, with
random related rows loaded or not, random expansions and auth types, ``serializer_data`` gives
exactly what DRF's own ``serializer.data`` gives, and the two renderers write the same JSON of
it. Serializers with fields it cannot compile (a method field, a custom ``to_representation``,
a dotted source, a nested serializer) fall back to DRF for those fields only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import renderers as drf_renderers
from rest_framework import serializers

from datapipe_django.rest import ExpandableField
from datapipe_django.rest import compiled as compiled_module
from datapipe_django.rest.compiled import serializer_data
from datapipe_django.rest.renderers import FiniteList, JSONRenderer
from datapipe_django.rest.sparse import restrict
from example_project.payouts.models import Contact, FundAccount, MerchantUser, Payout
from example_project.payouts.serializers import FundAccountSerializer, PayoutSerializer
from tests.testapp.models import Category, Comment, Item, Owner
from tests.testapp.serializers import (
    CategorySerializer,
    CommentSerializer,
    ItemSerializer,
    OwnerSerializer,
)

# -- serializers with what cannot compile -------------------------------------------------------


class Shouting(serializers.CharField):
    def to_representation(self, value):
        return str(value).upper()


class ItemWithExtras(ItemSerializer):
    """Every kind of field the compiler must leave to DRF, beside compiled ones."""

    shout = Shouting(source="name")
    method = serializers.SerializerMethodField()
    owner_name = serializers.CharField(source="owner.name", default=None)
    owner_object = OwnerSerializer(source="owner", read_only=True)
    as_pk = serializers.IntegerField(source="pk")
    raw_status = serializers.ReadOnlyField(source="status")
    amount_text = serializers.CharField(source="amount")
    created = serializers.DateTimeField(source="created_at", format="%Y/%m/%d %H:%M")
    day_text = serializers.DateField(source="day", format="%d.%m.%Y")
    in_kolkata = serializers.DateTimeField(source="created_at",
                                           default_timezone=zoneinfo.ZoneInfo("Asia/Kolkata"))
    ratio = serializers.FloatField(source="score")
    big = serializers.DecimalField(source="amount", max_digits=20, decimal_places=2)

    class Meta(ItemSerializer.Meta):
        fields = (*ItemSerializer.Meta.fields, "shout", "method", "owner_name", "owner_object",
                  "as_pk", "raw_status", "amount_text", "created", "day_text", "in_kolkata",
                  "ratio", "big")

    def get_method(self, obj):
        return {"auth": self.context.get("auth_type"), "id": obj.pk}


class OwnRepresentation(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ("id", "name")

    def to_representation(self, instance):
        return {"only": instance.name}


class ItemOwnRepresentation(ItemSerializer):
    category = ExpandableField(OwnRepresentation)


# -- rows ------------------------------------------------------------------------------------------

text = st.text(max_size=12)
ids = st.integers(min_value=1, max_value=2**53)
zones = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                         dt.timezone(dt.timedelta(hours=-8)), zoneinfo.ZoneInfo("Europe/Paris")])
naive = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1))
aware = st.builds(lambda d, z: d.replace(tzinfo=z), naive, zones)
datetimes = aware | naive


def maybe(strategy):
    return st.none() | strategy


@st.composite
def owners(draw):
    return Owner(id=draw(ids), name=draw(text), email=draw(text))


@st.composite
def categories(draw):
    return Category(id=draw(ids), name=draw(text))


@st.composite
def items(draw, owner_loaded=False):
    item = Item(
        id=draw(ids), tenant=draw(text),
        name=draw(text), status=draw(st.sampled_from(Item.Status.values) | text),
        amount=draw(st.integers(-(2**31), 2**31 - 1)), active=draw(st.booleans()),
        created_at=draw(datetimes), day=draw(st.dates()), score=draw(maybe(st.integers())),
        category_id=draw(maybe(ids)), owner_id=draw(maybe(ids)),
    )
    if owner_loaded or draw(st.booleans()):  # the owner loaded (as an enricher leaves it)
        owner = draw(maybe(owners()))
        item.owner = owner
        if owner is None and not owner_loaded and draw(st.booleans()):
            item.owner_id = draw(ids)  # a dangling key (and the relation not loaded any more)
    if draw(st.booleans()):
        item.category = draw(maybe(categories()))
    return item


@st.composite
def comments(draw):
    comment = Comment(id=draw(ids), item_id=draw(ids), author_id=draw(maybe(ids)),
                      tenant=draw(text), body=draw(text))
    if draw(st.booleans()):
        comment.author = draw(maybe(owners()))
    return comment


@st.composite
def fund_accounts(draw, pk=None):
    account = FundAccount(id=pk or draw(ids), merchant_id=draw(ids), contact_id=draw(ids),
                          account_type=draw(st.sampled_from(FundAccount.AccountType.values)),
                          details=draw(text))
    if draw(st.booleans()):
        account.contact = Contact(id=account.contact_id, merchant_id=account.merchant_id,
                                  name=draw(text), email=draw(text),
                                  type=draw(st.sampled_from(Contact.Type.values)))
    return account


@st.composite
def payouts(draw):
    payout = Payout(
        id=draw(ids), merchant_id=draw(ids), user_id=draw(ids), fund_account_id=draw(ids),
        amount=draw(st.integers(0, 2**63 - 1)), currency=draw(text),
        status=draw(st.sampled_from(Payout.Status.values)),
        mode=draw(st.sampled_from(Payout.Mode.values)), purpose=draw(text),
        reference_id=draw(text), narration=draw(text), utr=draw(maybe(text)),
        transaction_id=draw(maybe(text)), created_at=draw(aware),
        processed_at=draw(maybe(aware)),
    )
    if draw(st.booleans()):
        payout.user = MerchantUser(id=payout.user_id, merchant_id=payout.merchant_id,
                                   name=draw(text), email=draw(text))
    if draw(st.booleans()):
        payout.fund_account = draw(fund_accounts(payout.fund_account_id))
    if draw(st.booleans()):
        payout.transaction = draw(maybe(st.fixed_dictionaries({
            "id": text, "amount": st.integers(), "fee": st.integers(), "tax": st.integers(),
            "currency": text, "status": text, "settled_at": maybe(text)})))
    return payout


CASES = {
    "item": (ItemSerializer, items(), ["owner", "category"]),
    # Its dotted and nested fields read item.owner: loaded, so that DRF runs no query.
    "item, extras": (ItemWithExtras, items(owner_loaded=True), ["owner", "category"]),
    "item, own to_representation below": (ItemOwnRepresentation, items(), ["category"]),
    "comment": (CommentSerializer, comments(), ["author"]),
    "fund account": (FundAccountSerializer, fund_accounts(), ["contact"]),
    "payout": (PayoutSerializer, payouts(),
               ["user", "fund_account", "fund_account.contact", "transaction"]),
}


def built(serializer_class, instance, context, many):
    """The serializer as PipelineViewSet.get_serializer builds it (sparse fieldsets applied)."""
    serializer = serializer_class(instance, many=many, context=context)
    if context.get("fields") or context.get("omit"):
        restrict(serializer, context.get("fields", ()), context.get("omit", ()))
    return serializer


def drf_and_ours(serializer_class, instance, context, many=True):
    """Both renderings; where DRF raises (a naive datetime in a zone's DST gap cannot be made
    aware), the compiled path must raise the same error."""
    try:
        drf = built(serializer_class, instance, context, many).data
    except serializers.ValidationError as exc:
        refused = exc.detail
    else:
        return drf, serializer_data(built(serializer_class, instance, context, many))
    with pytest.raises(serializers.ValidationError) as ours:
        serializer_data(built(serializer_class, instance, context, many))
    assert ours.value.detail == refused
    return None, None


def field_paths(serializer_class, expandable):
    """Names ``fields``/``omit`` may give: the serializer's fields, and fields below an
    expandable relation (``owner.name``)."""
    names = list(serializer_class(context={"auth_type": "private"}).fields)
    for path in expandable:
        field = serializer_class(context={"auth_type": "private"}).fields.get(path.split(".")[0])
        nested = getattr(field, "serializer_class", None)
        if isinstance(nested, type) and issubclass(nested, serializers.Serializer):
            names += [f"{path}.{name}" for name in nested().fields]
    return names


def rendered_alike(drf, ours):
    for data in (drf, ours):
        assert json.loads(JSONRenderer().render({"items": data})) == json.loads(
            drf_renderers.JSONRenderer().render({"items": drf}))


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_compiled_rows_are_drfs_rows(case, data):
    serializer_class, rows, expandable = CASES[case]
    page = data.draw(st.lists(rows, max_size=6), label="rows")
    paths = field_paths(serializer_class, expandable)
    context = {
        "expand": frozenset(data.draw(st.sets(st.sampled_from(expandable)), label="expand")),
        "auth_type": data.draw(st.sampled_from([None, "public", "private"]), label="auth"),
        "request": None,
        # sparse fieldsets (?fields=, ?omit=), as the viewset puts them in the context
        "fields": frozenset(data.draw(st.sets(st.sampled_from(paths), max_size=4) | st.just(
            set()), label="fields")),
        "omit": frozenset(data.draw(st.sets(st.sampled_from(paths), max_size=3) | st.just(
            set()), label="omit")),
    }
    zone = data.draw(st.sampled_from(["UTC", "Asia/Kolkata", "America/Los_Angeles"]))
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        drf, ours = drf_and_ours(serializer_class, page, context)
        if drf is None:
            return  # both refused the page, alike
        assert ours == drf
        assert [list(row) for row in ours] == [list(row) for row in drf]  # key order too
        rendered_alike(drf, ours)
        if page:  # retrieve: one instance
            one_drf, one_ours = drf_and_ours(serializer_class, page[0], context, many=False)
            assert one_ours == one_drf and list(one_ours) == list(one_drf)


# -- what compiles, what falls back ----------------------------------------------------------------


def plan_of(serializer_class, context):
    return compiled_module._plan_for(serializer_class(context=context))


def test_plain_fields_and_unexpanded_relations_compile_to_attribute_reads():
    plan = plan_of(ItemSerializer, {"expand": frozenset(), "auth_type": "public"})
    assert plan.bound == ()  # no DRF field code left for any field
    assert "obj.owner_id" in plan.source and "obj.category_id" in plan.source
    assert plan.finite


def test_an_expanded_relation_runs_drfs_field_and_only_that_one():
    plan = plan_of(ItemSerializer, {"expand": frozenset({"owner"}), "auth_type": "public"})
    assert plan.bound == ("owner",)


def test_an_expanded_relation_is_rendered_by_its_own_compiled_serializer():
    compiled_module.clear_cache()
    item = Item(id=1, name="a", amount=1, status="queued", active=True, day=dt.date(2026, 1, 1),
                created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    item.owner = Owner(id=7, name="Ann", email="a@example.com")
    data = serializer_data(ItemSerializer([item], many=True,
                                          context={"expand": frozenset({"owner"})}))
    assert data[0]["owner"] == {"id": 7, "name": "Ann", "email": "a@example.com"}
    assert any(key[0] is OwnerSerializer for key in compiled_module._plans)


def test_an_expanded_relation_binds_its_field_without_building_the_serializers_fields():
    """Only the expanded ExpandableField is bound for the request (a fresh copy, as DRF's
    ``fields`` would hold it); the serializer's other fields are never built."""
    compiled_module.clear_cache()
    item = Item(id=1, name="a", amount=1, status="queued", active=True, day=dt.date(2026, 1, 1),
                created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    item.owner = Owner(id=7, name="Ann", email="a@example.com")
    context = {"expand": frozenset({"owner"})}
    serializer = ItemSerializer([item], many=True, context=context)
    plan = compiled_module._plan_for(serializer.child)
    assert plan.templates is not None and set(plan.templates) == {"owner"}
    data = serializer_data(serializer)
    assert "fields" not in serializer.child.__dict__  # DRF's field building never ran
    assert data == ItemSerializer([item], many=True, context=context).data
    assert plan.templates["owner"].parent is None  # the plan keeps an unbound copy


def test_a_field_drfs_code_renders_is_bound_from_the_serializers_fields():
    plan = plan_of(ItemWithExtras, {"expand": frozenset(), "auth_type": "public"})
    assert plan.templates is None


def test_what_cannot_compile_falls_back_per_field():
    plan = plan_of(ItemWithExtras, {"expand": frozenset(), "auth_type": "public"})
    assert set(plan.bound) == {"shout", "method", "owner_name", "owner_object"}
    assert "obj.id" in plan.source and "obj.name" in plan.source
    assert not plan.finite  # a float field: the renderer looks for NaN


def test_auth_type_fields_are_part_of_the_compiled_shape():
    public = PayoutSerializer([], many=True, context={"auth_type": "public"})
    private = PayoutSerializer([], many=True, context={"auth_type": "private"})
    assert "utr" not in compiled_module._plan_for(public.child).source
    assert "'utr'" in compiled_module._plan_for(private.child).source


def test_a_serializer_with_its_own_to_representation_is_left_to_drf():
    rows = [Category(id=1, name="x")]
    serializer = OwnRepresentation(rows, many=True)
    assert serializer_data(serializer) == [{"only": "x"}]
    assert not any(key[0] is OwnRepresentation for key in compiled_module._plans)


def test_rows_of_another_class_are_left_to_drf():
    class Named:
        id, name = 3, "n"

    serializer = CategorySerializer([Named()], many=True)
    assert serializer_data(serializer) == [{"id": 3, "name": "n"}]
    assert type(serializer_data(CategorySerializer([Category(id=1, name="c")], many=True))) \
        is FiniteList


class DynamicFields(ItemSerializer):
    """The classic "dynamic fields" serializer: its own __init__ drops fields."""

    def __init__(self, *args, keep=("id", "name"), **kwargs):
        super().__init__(*args, **kwargs)
        for name in set(self.fields) - set(keep):
            self.fields.pop(name)


class NeedsAnArgument(CategorySerializer):
    def __init__(self, *args, prefix, **kwargs):
        self.prefix = prefix
        super().__init__(*args, **kwargs)


def test_a_serializer_with_its_own_init_renders_the_fields_it_kept():
    assert serializer_data(NeedsAnArgument([Category(id=1, name="c")], many=True, prefix="p")) \
        == [{"id": 1, "name": "c"}]  # never built without its argument
    rows = [Item(id=1, name="a", amount=2)]
    assert serializer_data(DynamicFields(rows, many=True)) == [{"id": 1, "name": "a"}]
    assert serializer_data(DynamicFields(rows, many=True, keep=("amount",))) == [{"amount": 2}]


def test_a_narrowed_serializer_renders_its_own_fields():
    """Fields removed from a built serializer (as sparse fieldsets do) are not rendered."""
    serializer = ItemSerializer([Item(id=1, name="a", amount=2)], many=True,
                                context={"expand": frozenset()})
    for name in [n for n in serializer.child.fields if n not in ("id", "amount")]:
        del serializer.child.fields[name]
    assert serializer_data(serializer) == [{"id": 1, "amount": 2}]


def test_the_setting_turns_the_compiled_path_off():
    compiled_module.clear_cache()
    rows = [Category(id=1, name="c")]
    with override_settings(DATAPIPE={"FAST_PATH": False}):
        data = serializer_data(CategorySerializer(rows, many=True))
        assert data == [{"id": 1, "name": "c"}] and type(data) is not FiniteList
        assert not compiled_module._plans
    assert type(serializer_data(CategorySerializer(rows, many=True))) is FiniteList


def test_a_plan_does_not_keep_the_request_alive():
    import gc
    import weakref

    page = [Item(id=1, name="a", amount=1, created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                 day=dt.date(2026, 1, 1))]
    serializer = ItemSerializer(page, many=True, context={"expand": frozenset({"owner"})})
    serializer_data(serializer)
    ref = weakref.ref(serializer)
    del serializer
    gc.collect()
    assert ref() is None


# -- through the viewset ---------------------------------------------------------------------------


def unsigned(content: bytes) -> bytes:
    """A body with each signed cursor cut to its position (no signing time, no signature)."""
    return re.sub(rb'("next_cursor":")([^"]*)(:[^":]*:[^":]*")', rb"\1\2\"", content)


@pytest.mark.django_db
@pytest.mark.parametrize("params", [
    {"limit": 7}, {"limit": 7, "expand": "owner"}, {"limit": 3, "offset": 2, "status": "queued"},
    {"limit": 5, "fields": "id,amount,owner,owner.name"}, {"limit": 5, "omit": "name,day,owner"},
])
@pytest.mark.parametrize("auth_type", ["public", "private"])
def test_the_endpoint_answers_the_same_with_the_fast_path_on_and_off(params, auth_type):
    from rest_framework.test import APIClient

    from datapipe_django.rest import renderers

    owners = Owner.objects.bulk_create([Owner(id=1, name="Ann \u2028"), Owner(id=2, name="B")])
    Category.objects.create(id=1, name="caf\u00e9")
    base = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    Item.objects.bulk_create([
        Item(id=i, tenant="t1", name=f"item {i} \U0001f600", status=["queued", "processed"][i % 2],
             amount=i * 100, active=i % 3 != 0, created_at=base + dt.timedelta(hours=i),
             day=base.date(), score=i % 4 or None, owner=owners[i % 2] if i % 3 else None,
             category_id=1 if i % 2 else None)
        for i in range(1, 12)
    ])
    client = APIClient()
    headers = {"HTTP_X_TENANT": "t1", "HTTP_X_AUTH_TYPE": auth_type}
    expand = {"expand": "owner,category"} if auth_type == "private" else {}
    if "fields" in params:
        expand = {"expand": "owner"}
    fast = client.get("/v1/items", {**params, **expand}, **headers)
    one = client.get("/v1/items/3", expand, **headers)
    assert fast.status_code == one.status_code == 200
    if renderers.orjson is not None:
        assert type(fast.accepted_renderer) is renderers.JSONRenderer
    with override_settings(DATAPIPE={"FAST_PATH": False}):
        slow = client.get("/v1/items", {**params, **expand}, **headers)
        one_slow = client.get("/v1/items/3", expand, **headers)
        assert type(slow.accepted_renderer) is drf_renderers.JSONRenderer
    # The cursor's position, not its signing second (a second may pass between the two).
    def body(response):
        found = response.json()
        cursor = found.get("next_cursor")
        return {**found, "next_cursor": cursor and cursor.split(":")[0]}

    assert fast.json()["items"] and body(fast) == body(slow)
    rows = fast.json()["items"]
    if "fields" in params:
        assert all(set(row) == {"id", "amount", "owner"} for row in rows)
        assert any(row["owner"] == {"name": "B"} for row in rows)
    elif "omit" in params:
        assert not any({"name", "day", "owner"} & set(row) for row in rows)
    elif expand:  # the expanded relations are objects, on both paths
        assert any(isinstance(row["owner"], dict) for row in rows)
    # No floats here: byte for byte, but for the cursor's signing time (a second may pass).
    assert unsigned(fast.content) == unsigned(slow.content)
    assert one.content == one_slow.content
