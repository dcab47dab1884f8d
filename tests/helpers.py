"""Small helpers shared by several test modules."""

from __future__ import annotations

from collections import Counter
from typing import Any

from datapipe_django import Pipeline
from datapipe_django.rest import PipelineViewSet
from tests.testapp.models import Item
from tests.testapp.serializers import ItemSerializer


def list_view(p: Pipeline) -> Any:
    """The list endpoint of ``p`` for tenant ``t1``, serialized with ``ItemSerializer``."""
    class View(PipelineViewSet):
        pipeline = p
        serializer_class = ItemSerializer

        def get_tenant(self) -> str:
            return "t1"

    return View.as_view({"get": "list"})


def facet_counts(rows: list[Any], names: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """What facets must say about ``rows``: per field, values by count, then value."""
    found = {}
    for name in names:
        attname = Item._meta.get_field(name).attname
        counts = Counter(getattr(r, attname) for r in rows if getattr(r, attname) is not None)
        found[name] = [{"value": v, "count": n}
                       for v, n in sorted(counts.items(), key=lambda p: (-p[1], p[0]))]
    return found
