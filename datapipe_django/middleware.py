"""Stage middleware: cross-cutting code wrapped around every stage of a pipeline.

A middleware is a callable ``(stage, state, call_next) -> None``: ``stage`` is the stage's
name, ``call_next(state)`` runs the rest of the stack and then the stage. The first
middleware of ``Pipeline(middleware=[...])`` (or the first ``use()``-d) is the outermost::

    def log_stage(stage, state, call_next):
        started = time.monotonic()
        try:
            call_next(state)
        finally:
            logger.info("%s %s %.1f ms", state.pipeline.name, stage, ...)

Built-ins, in the order to list them (outermost first)::

    Pipeline(..., middleware=[
        LoggingMiddleware(),            # one line per execution, with its final outcome
        TimingMiddleware(slow=0.5),     # a warning for a stage slower than 0.5 s
        RecoveryMiddleware("audit"),    # the optional stage "audit" may fail: skip it
    ])

:class:`LoggingMiddleware` goes first so that it sees what the others did (a stage that
recovery skipped is in its line); :class:`RecoveryMiddleware` goes last, next to the stage, so
that the middleware outside it see the execution go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured

from datapipe_django.errors import PipelineError, ValidationFailed

if TYPE_CHECKING:
    from datapipe_django.state import State

__all__ = [
    "LoggingMiddleware",
    "RecoveryMiddleware",
    "StageHandler",
    "StageMiddleware",
    "TimingMiddleware",
    "compose",
]

StageHandler = Callable[["State"], None]


class StageMiddleware(Protocol):
    def __call__(self, stage: str, state: State, call_next: StageHandler) -> None: ...


def _layer(mw: StageMiddleware, stage: str, inner: StageHandler, state: State) -> None:
    mw(stage, state, inner)


def compose(stage: str, handler: StageHandler,
            middleware: Sequence[StageMiddleware]) -> StageHandler:
    """Wrap ``handler`` so that ``middleware[0]`` runs outermost."""
    for mw in reversed(middleware):
        handler = partial(_layer, mw, stage, handler)
    return handler


# -- built-ins ----------------------------------------------------------------------------------

def _logger(logger: logging.Logger | str | None, default: str) -> logging.Logger:
    if isinstance(logger, logging.Logger):
        return logger
    return logging.getLogger(logger or default)


_STARTED = "datapipe.log.started"
_LOGGED = "datapipe.log.done"


class LoggingMiddleware:
    """Logs one line per execution, when it ends, on the logger ``datapipe_django.pipeline``.

    The message reads ``payouts list: 10 items from appdb,archive in 12.3 ms [appdb ok 7 rows
    3.1 ms; archive ok 3 rows 8.0 ms]``: the pipeline, what it served and how long it took,
    then every source the chain considered, with its outcome and why (declined, unavailable,
    not needed). The same facts are on the record as a dict, ``record.datapipe`` (``pipeline``,
    ``operation``, ``tenant``, ``auth_type``, ``items``, ``has_more``, ``served_by``,
    ``sources``, ``enrichment_errors``, ``recovered``, ``stages_ms``, ``duration_ms``,
    ``error``, ``invalid`` (the names of invalid parameters, never their values), ``status``),
    for a JSON formatter.

    Levels: ``INFO`` for a success, ``WARNING`` for a degraded one (a source was unavailable,
    an optional enricher or stage failed) and for a client error (4xx), ``ERROR`` for a 5xx or
    an unexpected exception (its traceback is left to whoever handles it).
    """

    def __init__(self, logger: logging.Logger | str | None = None) -> None:
        self.logger = _logger(logger, "datapipe_django.pipeline")

    def __call__(self, stage: str, state: State, call_next: StageHandler) -> None:
        started = state.extra.setdefault(_STARTED, time.perf_counter())
        stage_started = time.perf_counter()
        try:
            call_next(state)
        except Exception as exc:
            self._log(state, stage, stage_started, started, exc)
            raise
        if stage == state.pipeline.stages[-1].name:
            self._log(state, stage, stage_started, started, None)

    def _log(self, state: State, stage: str, stage_started: float, started: float,
             exc: BaseException | None) -> None:
        if state.extra.get(_LOGGED):
            return
        state.extra[_LOGGED] = True
        now = time.perf_counter()
        fields = self.fields(state, exc)
        level = self.level(fields)
        if not self.logger.isEnabledFor(level):
            return
        fields["stages_ms"] = {**{k: round(v * 1000, 3) for k, v in state.timings.items()},
                               stage: round((now - stage_started) * 1000, 3)}
        fields["duration_ms"] = round((now - started) * 1000, 3)
        self.logger.log(level, "%s", _line(fields, failed=exc is not None),
                        extra={"datapipe": fields})

    @staticmethod
    def fields(state: State, exc: BaseException | None) -> dict[str, Any]:
        """The structured fields of the line (override to add or remove some)."""
        request = state.request
        status = 200
        error: str | None = None
        if isinstance(exc, PipelineError):
            status, error = exc.status_code, exc.code
        elif exc is not None:
            status, error = 500, type(exc).__name__
        invalid = sorted(exc.errors) if isinstance(exc, ValidationFailed) else []
        return {
            "pipeline": state.pipeline.name,
            "operation": "retrieve" if request.pk is not None else "list",
            "tenant": request.tenant,
            "auth_type": request.auth_type,
            "items": len(state.items),
            "has_more": state.has_more,
            "served_by": list(state.sources),
            "sources": [
                {"source": a.source, "outcome": a.outcome, "reason": a.reason, "rows": a.count,
                 "ms": round(a.duration * 1000, 3), **({"cache": a.meta["cache"]}
                                                        if "cache" in a.meta else {})}
                for a in state.attempts
            ],
            "enrichment_errors": list(state.errors),
            "recovered": list(state.extra.get("recovered", ())),
            "error": error,
            "invalid": invalid,
            "status": status,
        }

    @staticmethod
    def level(fields: Mapping[str, Any]) -> int:
        """The level of a line from its fields."""
        if fields["status"] >= 500:
            return logging.ERROR
        if fields["status"] >= 400 or fields["enrichment_errors"] or fields["recovered"]:
            return logging.WARNING
        if any(s["outcome"] in ("unavailable", "timeout") for s in fields["sources"]):
            return logging.WARNING
        return logging.INFO


def _line(fields: dict[str, Any], *, failed: bool) -> str:
    """The human-readable line of a request's log record, from its structured ``fields``."""
    head = f"{fields['pipeline']} {fields['operation']}"
    if not failed:
        served = ",".join(fields["served_by"]) or "no source"
        text = f"{head}: {fields['items']} items from {served} in {fields['duration_ms']:.1f} ms"
    else:
        text = f"{head} failed: {fields['error']} in {fields['duration_ms']:.1f} ms"
        if fields.get("invalid"):
            text += f" (invalid: {', '.join(fields['invalid'])})"
    sources = "; ".join(_describe_source(s) for s in fields["sources"])
    if sources:
        text += f" [{sources}]"
    if fields["enrichment_errors"]:
        text += " enrichment errors: " + ", ".join(
            f"{e.get('enricher')} {e.get('code')}" for e in fields["enrichment_errors"])
    if fields["recovered"]:
        text += " recovered: " + ", ".join(
            f"{r['stage']} {r['error']}" for r in fields["recovered"])
    return text


def _describe_source(source: Mapping[str, Any]) -> str:
    text = f"{source['source']} {source['outcome']}"
    if source["outcome"] == "ok":
        text += f" {source['rows']} rows {source['ms']:.1f} ms"
        if "cache" in source:
            text += f" (cache {source['cache']})"
    elif source["reason"]:
        text += f": {source['reason']}"
    return text


class TimingMiddleware:
    """Times every stage and logs a warning, on ``datapipe_django.timing``, for a stage slower
    than its threshold: ``slow`` seconds, or a mapping ``{stage: seconds}`` (stages not in it
    are not watched). Durations of every stage are also in ``state.timings`` and the result's
    ``timings``, whatever the middleware."""

    def __init__(self, slow: float | Mapping[str, float] = 0.5,
                 logger: logging.Logger | str | None = None) -> None:
        self.slow = slow
        self.logger = _logger(logger, "datapipe_django.timing")

    def threshold(self, stage: str) -> float | None:
        if isinstance(self.slow, Mapping):
            value = self.slow.get(stage)
            return None if value is None else float(value)
        return float(self.slow)

    def __call__(self, stage: str, state: State, call_next: StageHandler) -> None:
        start = time.perf_counter()
        try:
            call_next(state)
        finally:
            duration = time.perf_counter() - start
            threshold = self.threshold(stage)
            if threshold is not None and duration > threshold:
                self.logger.warning(
                    "%s: stage %s took %.1f ms (slower than %.1f ms)", state.pipeline.name,
                    stage, duration * 1000, threshold * 1000,
                    extra={"datapipe": {"pipeline": state.pipeline.name, "stage": stage,
                                        "duration_ms": round(duration * 1000, 3),
                                        "threshold_ms": round(threshold * 1000, 3)}},
                )


class RecoveryMiddleware:
    """Lets the optional stages named here fail without failing the execution.

    ``RecoveryMiddleware("audit", "annotate")``: when one of those stages raises, the error is
    logged (with its traceback, on ``datapipe_django.recovery``), noted in
    ``state.extra["recovered"]`` as ``{"stage": ..., "error": <exception class>}`` and the
    execution goes on to the next stage. A :class:`~datapipe_django.errors.PipelineError` is
    never swallowed: a deadline or a required enricher keeps its meaning. The built-in
    ``validate``, ``fetch`` and ``build`` stages cannot be made optional.
    """

    REQUIRED_STAGES = frozenset({"validate", "fetch", "build"})

    def __init__(self, *stages: str, logger: logging.Logger | str | None = None) -> None:
        if not stages:
            raise ImproperlyConfigured(
                "RecoveryMiddleware: name the optional stages it may skip on failure, e.g. "
                "RecoveryMiddleware('audit')."
            )
        required = sorted(set(stages) & self.REQUIRED_STAGES)
        if required:
            raise ImproperlyConfigured(
                f"RecoveryMiddleware: the {', '.join(required)} stage cannot be optional: "
                f"without it the response would be wrong, not partial."
            )
        self.stages = frozenset(stages)
        self.logger = _logger(logger, "datapipe_django.recovery")

    def __call__(self, stage: str, state: State, call_next: StageHandler) -> None:
        if stage not in self.stages:
            call_next(state)
            return
        try:
            call_next(state)
        except PipelineError:
            raise
        except Exception as exc:
            self.logger.warning("%s: optional stage %s failed and was skipped: %s",
                                state.pipeline.name, stage, exc, exc_info=True)
            state.extra.setdefault("recovered", []).append(
                {"stage": stage, "error": type(exc).__name__})
