"""Where concurrent work (parallel fetchers, enrichers) runs.

One model of concurrency: a bounded thread pool. Each task runs in a copy of the caller's
``contextvars`` context (so per-request state and trace context follow it) and returns its
thread's database connections when it ends, the way Django's request cycle does.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections

from datapipe_django.conf import datapipe_settings

__all__ = ["get_executor", "submit"]

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0


def get_executor() -> ThreadPoolExecutor:
    """The shared pool, sized by ``DATAPIPE["MAX_WORKERS"]`` (re-created if that changes)."""
    global _executor, _executor_size
    size = int(datapipe_settings.MAX_WORKERS)
    with _lock:
        if _executor is None or _executor_size != size:
            if _executor is not None:
                _executor.shutdown(wait=False)
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="datapipe")
            _executor_size = size
        return _executor


def _run(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


def submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run ``fn(*args)`` on the pool, in a copy of the current context."""
    ctx = contextvars.copy_context()
    return get_executor().submit(ctx.run, _run, fn, args)
