"""Pipelines by name: every :class:`~datapipe_django.Pipeline` registers itself here."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from datapipe_django.pipeline import Pipeline

__all__ = ["all_pipelines", "get_pipeline", "register", "unregister"]

_pipelines: dict[str, Pipeline] = {}
_lock = threading.Lock()


def register(pipeline: Pipeline) -> None:
    """Add ``pipeline``; another pipeline of the same name is an ``ImproperlyConfigured``."""
    with _lock:
        existing = _pipelines.get(pipeline.name)
        if existing is not None and existing is not pipeline:
            raise ImproperlyConfigured(
                f"Pipeline name {pipeline.name!r} is already registered (model "
                f"{existing.model._meta.label}). Give each Pipeline a unique first argument, "
                f"or pass register=False for a private one."
            )
        _pipelines[pipeline.name] = pipeline


def unregister(name: str) -> None:
    """Remove a pipeline by name (no error if absent). Meant for tests."""
    with _lock:
        _pipelines.pop(name, None)


def get_pipeline(name: str) -> Pipeline:
    """The registered pipeline ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _pipelines[name]
    except KeyError:
        known = ", ".join(sorted(_pipelines)) or "none"
        raise KeyError(f"No pipeline named {name!r} (registered: {known}).") from None


def all_pipelines() -> list[Pipeline]:
    """Every registered pipeline, by name."""
    return [_pipelines[k] for k in sorted(_pipelines)]
