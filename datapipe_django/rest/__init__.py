"""The DRF integration: ``PipelineViewSet`` and ``ExpandableField``."""

from datapipe_django.rest.expand import ExpandableField, parse_expand
from datapipe_django.rest.viewsets import PipelineViewSet

__all__ = ["ExpandableField", "PipelineViewSet", "parse_expand"]
