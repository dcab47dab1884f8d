"""The paginator of the hand-written DRF views the benchmarks compare against."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response


class EnvelopePagination(LimitOffsetPagination):
    """``limit``/``offset`` answered with our envelope: one extra row instead of a COUNT."""

    default_limit = 10
    max_limit = 100

    def paginate_queryset(self, queryset, request, view=None):
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        rows = list(queryset[self.offset : self.offset + self.limit + 1])
        self.has_more = len(rows) > self.limit
        return rows[: self.limit]

    def get_paginated_response(self, data):
        return Response({"entity": "collection", "count": len(data), "has_more": self.has_more,
                         "next_cursor": None, "items": data})
