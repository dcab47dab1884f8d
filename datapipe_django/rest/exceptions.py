"""HTTP mapping of pipeline errors (the only place where statuses are decided)."""

from __future__ import annotations

from rest_framework.response import Response

from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import PipelineError, SourcesUnavailable, ValidationFailed

__all__ = ["SOURCE_HEADER", "UNAVAILABLE_HEADER", "pipeline_error_response"]

SOURCE_HEADER = "X-Datapipe-Source"
UNAVAILABLE_HEADER = "X-Datapipe-Unavailable"


def pipeline_error_response(exc: PipelineError) -> Response:
    """A DRF-style body: ``{param: [messages]}`` for bad input, ``{"detail", "code"}`` else."""
    if isinstance(exc, ValidationFailed):
        return Response(exc.errors, status=400)
    headers = {}
    if isinstance(exc, SourcesUnavailable):
        headers["Retry-After"] = str(int(datapipe_settings.RETRY_AFTER))
        if exc.reasons:  # which stores were down, as on a 200 that lacked one
            headers[UNAVAILABLE_HEADER] = ",".join(exc.reasons)
    return Response({"detail": exc.message, "code": exc.code}, status=exc.status_code,
                    headers=headers)
