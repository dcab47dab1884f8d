"""The exception tree of datapipe_django.

::

    Exception
    ├── PipelineError(stage, op, cause)        an execution failed; the view maps it to HTTP
    │   ├── ValidationFailed                   400  bad parameters; ``errors`` maps param → messages
    │   ├── NoFetcher                          400  no source can serve this request
    │   ├── SourcesUnavailable                 503  every candidate source was unavailable
    │   ├── DeadlineExceeded                   504  the pipeline's ``timeout`` ran out
    │   └── EnrichmentFailed                   502  a required enricher failed
    └── SourceUnavailable(source, reason)      raised *by a fetcher* when its own store is down,
                                               lagging or timing out; the chain moves on

Only :class:`SourceUnavailable` and Django's ``OperationalError``/``InterfaceError`` move a
fetcher chain to its next source. Anything else (``FieldError``, ``TypeError``...) is a bug and
propagates unchanged. HTTP status codes live here only as data (``status_code``); the mapping
to responses happens in :mod:`datapipe_django.rest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DeadlineExceeded",
    "EnrichmentFailed",
    "NoFetcher",
    "PipelineError",
    "SourceUnavailable",
    "SourcesUnavailable",
    "ValidationFailed",
]


class PipelineError(Exception):
    """Base of every error a pipeline execution raises.

    ``stage`` is the stage that failed (``"validate"``, ``"fetch"``...), ``op`` the operation
    inside it (a fetcher or enricher name, a parameter), ``cause`` the underlying exception.
    """

    status_code = 500
    default_code = "pipeline_error"
    default_message = "The pipeline failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        stage: str | None = None,
        op: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.stage = stage
        self.op = op
        self.cause = cause
        super().__init__(self.message)

    @property
    def code(self) -> str:
        return self.default_code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, stage={self.stage!r}, op={self.op!r}, "
            f"cause={self.cause!r})"
        )


class ValidationFailed(PipelineError):
    """Bad input. ``errors`` maps each offending parameter to a list of messages."""

    status_code = 400
    default_code = "invalid"
    default_message = "Invalid request parameters."

    def __init__(
        self,
        errors: Mapping[str, Sequence[str] | str] | str | None = None,
        *,
        stage: str | None = "validate",
        op: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        if isinstance(errors, str):
            errors = {op or "non_field_errors": [errors]}
        self.errors: dict[str, list[str]] = {
            key: [value] if isinstance(value, str) else [str(v) for v in value]
            for key, value in (errors or {}).items()
        }
        names = ", ".join(self.errors) or "request"
        super().__init__(f"Invalid parameter(s): {names}.", stage=stage, op=op, cause=cause)


class NoFetcher(PipelineError):
    """No fetcher of the pipeline can handle the request (every ``can_handle`` declined)."""

    status_code = 400
    default_code = "no_fetcher"
    default_message = "No source can serve this request."

    def __init__(self, message: str | None = None, *, reasons: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        self.reasons = dict(reasons or {})
        kwargs.setdefault("stage", "fetch")
        super().__init__(message, **kwargs)


class SourcesUnavailable(PipelineError):
    """Every candidate source failed with its own unavailability. ``reasons``: name → why."""

    status_code = 503
    default_code = "sources_unavailable"
    default_message = "No data source is available right now."
    retry_after = 1

    def __init__(self, message: str | None = None, *, reasons: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        self.reasons = dict(reasons or {})
        kwargs.setdefault("stage", "fetch")
        super().__init__(message, **kwargs)


class DeadlineExceeded(PipelineError):
    """The pipeline's ``timeout`` budget ran out before a required step finished."""

    status_code = 504
    default_code = "deadline_exceeded"
    default_message = "The request took longer than its deadline."


class EnrichmentFailed(PipelineError):
    """A required enricher failed."""

    status_code = 502
    default_code = "enrichment_failed"
    default_message = "A required enrichment failed."


class SourceUnavailable(Exception):
    """Raised by a fetcher when its own store cannot answer (down, lagging, timing out).

    This is the one signal, besides Django's ``OperationalError``/``InterfaceError``, that makes
    a fetcher chain fall back to its next source.
    """

    def __init__(self, source: str, reason: str, *, cause: BaseException | None = None) -> None:
        self.source = source
        self.reason = reason
        self.cause = cause
        super().__init__(f"{source}: {reason}")
