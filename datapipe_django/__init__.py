"""datapipe_django: read APIs over many data stores, as pipelines.

validate → fetch (with fallback across sources) → transform → enrich → build.
"""

from datapipe_django.cache.generations import invalidate
from datapipe_django.chain import FallbackMode
from datapipe_django.errors import (
    DeadlineExceeded,
    EnrichmentFailed,
    NoFetcher,
    PipelineError,
    SourcesUnavailable,
    SourceUnavailable,
    ValidationFailed,
)
from datapipe_django.pipeline import Pipeline
from datapipe_django.registry import get_pipeline
from datapipe_django.request import PipelineRequest
from datapipe_django.state import PipelineResult, State

__version__ = "0.1.0"

__all__ = [
    "DeadlineExceeded",
    "EnrichmentFailed",
    "FallbackMode",
    "NoFetcher",
    "Pipeline",
    "PipelineError",
    "PipelineRequest",
    "PipelineResult",
    "SourceUnavailable",
    "SourcesUnavailable",
    "State",
    "ValidationFailed",
    "get_pipeline",
    "invalidate",
]
