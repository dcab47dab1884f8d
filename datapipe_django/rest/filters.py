"""`PipelineFilterBackend`: the pipeline's FilterSet, shown to DRF.

A ``PipelineViewSet`` never filters a queryset (every source applies the FilterSet, compiled
to a specification). This backend tells DRF which FilterSet that is, so that the browsable API
renders its form and schema generators (drf-spectacular's django-filter support) document its
parameters.
"""

from __future__ import annotations

from typing import Any

from django_filters.rest_framework import DjangoFilterBackend

__all__ = ["PipelineFilterBackend"]


class PipelineFilterBackend(DjangoFilterBackend):
    """Describes ``view.get_pipeline().filterset_class``; filters nothing itself."""

    def get_filterset_class(self, view: Any, queryset: Any = None) -> Any:
        return view.get_pipeline().filterset_class

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        return queryset  # the pipeline's sources apply the filters
