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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datapipe_django.state import State

__all__ = ["StageHandler", "StageMiddleware", "compose"]

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
