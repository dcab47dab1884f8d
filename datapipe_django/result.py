"""Kept for one release: `PipelineResult` lives in :mod:`datapipe_django.state` now (with the
`State` it is built from); import it from there or from ``datapipe_django``."""

from datapipe_django.state import PipelineResult

__all__ = ["PipelineResult"]
