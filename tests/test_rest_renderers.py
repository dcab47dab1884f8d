"""``datapipe_django.rest.renderers.JSONRenderer``: orjson's speed, DRF's output."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import renderers as drf_renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from datapipe_django.rest import renderers
from datapipe_django.rest.renderers import FiniteList, JSONRenderer, fast_renderers

# orjson is in the dev extra: CI must run these (a missing orjson fails there, never skips).
pytestmark = pytest.mark.skipif(renderers.orjson is None and not os.environ.get("CI"),
                                reason="orjson is not installed")

DRF = drf_renderers.JSONRenderer()
OURS = JSONRenderer()

#: Values DRF's encoder handles beyond JSON's own types, and text JSON escapes or not.
SPECIAL = [
    decimal.Decimal("12.50"), decimal.Decimal("-0.000001"), decimal.Decimal("1E+3"),
    dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 1, 12, 30, tzinfo=ZoneInfo("Asia/Kolkata")),
    dt.datetime(2026, 3, 1, 12, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2026, 3, 1, 12, 30),  # naive
    dt.date(1999, 12, 31), dt.time(23, 59, 1, 5), dt.timedelta(days=2, seconds=3),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    gettext_lazy("Unknown field."), "caf\u00e9 \u2603 \U0001f600", "line\u2028sep\u2029para",
    "quote \" backslash \\ tab \t nul \x00", b"bytes", 2**63 - 1, -(2**63), 2**64, 10**30,
    0.1, 1e16, 1e-7, -0.0, 5e-324, True, False, None, "",
]


def same(data, **context):
    ours = OURS.render(data, "application/json", context)
    drf = DRF.render(data, "application/json", context)
    assert (json.loads(ours) if ours else None) == (json.loads(drf) if drf else None)
    return ours, drf


@pytest.mark.parametrize("value", SPECIAL, ids=repr)
def test_special_values_decode_to_what_drf_writes(value):
    ours, drf = same({"value": value, "list": [value, {"nested": value}], "tuple": (value,)})
    if not isinstance(value, float | decimal.Decimal):  # 1e-06 is written 1e-6
        assert ours == drf  # byte for byte, too


def test_drf_containers_lazy_strings_and_a_queryset_like_iterable():
    data = ReturnDict({"items": ReturnList([{"a": 1}], serializer=None),
                       "msg": gettext_lazy("This field is required."),
                       "gen": (i for i in range(3))}, serializer=None)
    ours = OURS.render(data)
    data["gen"] = (i for i in range(3))
    assert ours == DRF.render(data)


def test_none_is_an_empty_body():
    assert OURS.render(None) == DRF.render(None) == b""


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, decimal.Decimal("NaN")])
def test_a_non_finite_number_is_refused_as_drf_refuses_it(value):
    data = {"items": [{"x": None}, {"x": [1, value]}]}
    with pytest.raises(ValueError, match="JSON compliant"):
        DRF.render(data)
    with pytest.raises(ValueError, match="JSON compliant"):
        OURS.render(data)


def test_rows_marked_finite_are_not_searched_and_unmarked_ones_are():
    inside = [{"x": math.nan}]
    assert b"null" in OURS.render({"a": None, "items": FiniteList(inside, serializer=None)})
    with pytest.raises(ValueError, match="JSON compliant"):
        OURS.render({"a": None, "items": ReturnList(inside, serializer=None)})


def test_non_string_keys_and_an_unknown_type_follow_drf():
    data = {1: "one", None: "none", 2.5: "x", False: "f"}
    assert OURS.render(data) == DRF.render(data)
    with pytest.raises(TypeError):
        DRF.render({"x": object()})
    with pytest.raises(TypeError):
        OURS.render({"x": object()})


def test_indent_from_the_accept_header_and_the_browsable_api_context():
    data = {"a": [1, {"b": "\u00e9"}]}
    media = "application/json; indent=4"
    assert OURS.render(data, media, {}) == DRF.render(data, media, {})
    assert OURS.render(data, "application/json", {"indent": 2}) == DRF.render(
        data, "application/json", {"indent": 2})


def test_ascii_and_long_separators_settings_follow_drf():
    class Ascii(JSONRenderer):
        ensure_ascii = True

    class Spacious(JSONRenderer):
        compact = False

    class DRFAscii(drf_renderers.JSONRenderer):
        ensure_ascii = True

    class DRFSpacious(drf_renderers.JSONRenderer):
        compact = False

    data = {"a": "\u00e9\u2028", "b": [1, 2]}
    assert Ascii().render(data) == DRFAscii().render(data)
    assert Spacious().render(data) == DRFSpacious().render(data)


def test_without_orjson_it_is_drfs_renderer(monkeypatch):
    monkeypatch.setattr(renderers, "orjson", None)
    data = {"when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "n": 1e16}
    assert OURS.render(data) == DRF.render(data)
    listed = [drf_renderers.JSONRenderer(), drf_renderers.BrowsableAPIRenderer()]
    assert fast_renderers(listed) == listed


def test_fast_renderers_swaps_only_drfs_json_renderer_and_the_setting_turns_it_off():
    class Custom(drf_renderers.JSONRenderer):
        pass

    listed = [drf_renderers.JSONRenderer(), drf_renderers.BrowsableAPIRenderer(), Custom()]
    swapped = fast_renderers(listed)
    assert type(swapped[0]) is JSONRenderer
    assert swapped[1:] == listed[1:]
    with override_settings(DATAPIPE={"FAST_PATH": False}):
        assert fast_renderers(listed) == listed


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False) | st.decimals(allow_nan=False,
                                                                    allow_infinity=False)
    | st.datetimes(timezones=st.none() | st.just(dt.UTC)) | st.dates() | st.uuids(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_data_decodes_to_what_drf_writes(data):
    same(data)
