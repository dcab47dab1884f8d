"""HTTP mapping of pipeline errors (the only place where statuses are decided)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from rest_framework.response import Response

from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import NoFetcher, PipelineError, SourcesUnavailable, ValidationFailed

__all__ = ["SOURCE_HEADER", "UNAVAILABLE_HEADER", "pipeline_error_response"]

logger = logging.getLogger("datapipe_django.rest")

SOURCE_HEADER = "X-Datapipe-Source"
UNAVAILABLE_HEADER = "X-Datapipe-Unavailable"


def pipeline_error_response(exc: PipelineError) -> Response:
    """A DRF-style body: ``{param: [messages]}`` for bad input, ``{"detail", "code"}`` else.

    What a client reads of a failure is generic: the kind's default message and code, never a
    host, a driver's message or a source's reason (logs, spans and metrics have those). With
    ``settings.DEBUG`` the body adds ``"reasons"`` (source → why). ``X-Datapipe-Unavailable``
    names the sources that were down unless ``DATAPIPE["SOURCE_HEADERS"]`` is False.
    """
    if isinstance(exc, ValidationFailed):
        return Response(exc.errors, status=400)
    headers = {}
    if isinstance(exc, SourcesUnavailable):
        headers["Retry-After"] = str(int(datapipe_settings.RETRY_AFTER))
        if exc.reasons and datapipe_settings.SOURCE_HEADERS:
            headers[UNAVAILABLE_HEADER] = ",".join(exc.reasons)
    # The reasons stay here: in the log (and in spans and metrics, recorded by the pipeline).
    logger.warning("%s %s: %s", exc.status_code, exc.code, exc.message)
    body: dict[str, Any] = {"detail": type(exc).default_message, "code": exc.code}
    if settings.DEBUG:
        reasons = getattr(exc, "reasons", None)
        body["reasons"] = dict(reasons) if reasons else (
            {exc.op or exc.stage or "pipeline": exc.message})
    elif isinstance(exc, NoFetcher):
        body["detail"] = ("No source can serve this combination of parameters; "
                          "drop or change a filter.")
    return Response(body, status=exc.status_code, headers=headers)
