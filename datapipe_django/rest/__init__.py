"""The DRF integration: ``PipelineViewSet``, ``ExpandableField`` and ``AuthTypeFieldsMixin``."""

from datapipe_django.rest.expand import ExpandableField, parse_expand
from datapipe_django.rest.serializers import AuthTypeFieldsMixin
from datapipe_django.rest.viewsets import PipelineViewSet

__all__ = ["AuthTypeFieldsMixin", "ExpandableField", "PipelineViewSet", "parse_expand"]
