"""`JSONRenderer`: DRF's JSON renderer, written by orjson when it is installed.

``pip install datapipe-django[fast]`` installs `orjson <https://github.com/ijl/orjson>`_;
``PipelineViewSet`` then answers ``application/json`` through it (``DATAPIPE["FAST_PATH"] =
False`` turns that off), and any other DRF view can use it too::

    REST_FRAMEWORK = {"DEFAULT_RENDERER_CLASSES": [
        "datapipe_django.rest.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ]}

The output decodes to what DRF's :class:`rest_framework.renderers.JSONRenderer` writes for the
same data, byte for byte in all but one respect (a number with an exponent is written ``1e16``
and ``1e-6``, not ``1e+16`` and ``1e-06``: the same numbers). Every value orjson does not write
itself goes through DRF's own encoder (lazy strings, ``Decimal``, datetimes with DRF's ``Z``,
``time``, ``timedelta``, ``bytes``, querysets, generators...). Whatever orjson would write
differently, or not at all, is handed to DRF's renderer whole: an indent (``Accept:
application/json; indent=4``, the browsable API), ``UNICODE_JSON = False``, ``COMPACT_JSON =
False``, a NaN or infinity (an error under ``STRICT_JSON``, as with DRF), an integer beyond 64
bits, a non-string dict key.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from typing import Any

from rest_framework import renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from datapipe_django.conf import datapipe_settings

try:  # the optional extra: datapipe-django[fast]
    import orjson
except ImportError:  # pragma: no cover - exercised by the fallback test via `orjson = None`
    orjson = None  # type: ignore[assignment]

__all__ = ["FiniteDict", "FiniteList", "JSONRenderer", "fast_renderers"]

_LINE_SEPARATORS = ("\u2028".encode(), "\u2029".encode())


class JSONRenderer(renderers.JSONRenderer):
    """``application/json`` through orjson when installed, else exactly DRF's renderer."""

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Mapping[str, Any] | None = None) -> bytes:
        if not self._orjson_writes(data, accepted_media_type, renderer_context):
            return super().render(data, accepted_media_type, renderer_context)
        encoder = self.encoder_class()
        try:
            out: bytes = orjson.dumps(data, default=encoder.default,
                                      option=orjson.OPT_PASSTHROUGH_DATETIME
                                      | orjson.OPT_PASSTHROUGH_DATACLASS)
        except TypeError:
            # orjson.JSONEncodeError is a TypeError: an integer beyond 64 bits, a non-string
            # key, or a value no encoder knows. DRF's renderer writes it or raises its own error.
            return super().render(data, accepted_media_type, renderer_context)
        if b"null" in out and _has_non_finite(data):
            return super().render(data, accepted_media_type, renderer_context)  # NaN: DRF's call
        return _escape_line_separators(out)

    def _orjson_writes(self, data: Any, accepted_media_type: str | None,
                       renderer_context: Mapping[str, Any] | None) -> bool:
        """Whether orjson can write ``data`` as DRF would (compact, not ASCII-only, no
        indent asked for)."""
        return not (orjson is None or data is None or self.ensure_ascii or not self.compact
                    or self.get_indent(accepted_media_type or "", renderer_context or {})
                    is not None)


def _escape_line_separators(out: bytes) -> bytes:
    """U+2028 and U+2029 escaped, as DRF does: JSON that is also a JavaScript subset."""
    for separator in _LINE_SEPARATORS:
        if separator in out:
            return out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return out


class FiniteList(ReturnList):  # type: ignore[misc]
    """Serialized rows known to hold no NaN or infinity (the compiled serializer's, when no
    field of it can give a float): the renderer need not look inside."""


class FiniteDict(ReturnDict):  # type: ignore[misc]
    """One serialized row known to hold no NaN or infinity (see :class:`FiniteList`)."""


def _has_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is somewhere in ``value`` (orjson writes them as null,
    where DRF refuses them or writes ``NaN``)."""
    stack = [value]
    isfinite = math.isfinite
    while stack:
        current = stack.pop()
        kind = current.__class__
        if kind in _NOTHING_INSIDE:
            continue
        if kind is float:
            if not isfinite(current):
                return True
        elif isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list | tuple):
            stack.extend(current)
        elif isinstance(current, decimal.Decimal) and not current.is_finite():
            return True
    return False


#: Values that hold no float: scalars, and the rows known to be finite.
_NOTHING_INSIDE = frozenset({str, int, bool, type(None), FiniteList, FiniteDict})


def fast_renderers(renderers_: list[Any]) -> list[Any]:
    """``renderers_`` with DRF's own ``JSONRenderer`` replaced by ours (same media type and
    format), unless ``DATAPIPE["FAST_PATH"]`` is off or orjson is not installed."""
    if orjson is None or not datapipe_settings.FAST_PATH:
        return renderers_
    return [JSONRenderer() if type(r) is renderers.JSONRenderer else r for r in renderers_]
