"""Where concurrent work (parallel fetchers, enrichers) runs.

One model of concurrency: a bounded thread pool. Each task runs in a copy of the caller's
``contextvars`` context (so per-request state and trace context follow it) and returns its
thread's database connections when it ends, the way Django's request cycle does.

:class:`Scheduler` is the one way a call spreads its work over the pool and its own thread
within a deadline (the fetcher chain's ``PARALLEL`` mode, the enrichers of a page, a
``BatchEnricher``'s chunks).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

from django.db import close_old_connections

from datapipe_django.conf import datapipe_settings
from datapipe_django.timeouts import seconds_left

__all__ = ["Scheduler", "get_executor", "submit"]

T = TypeVar("T")
K = TypeVar("K")

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


class Scheduler(Generic[K]):
    """The work of one call, spread over the shared pool and the calling thread, within one
    deadline: the one scheduler of the fetcher chain (``PARALLEL``), the enrichers of a page
    and a ``BatchEnricher``'s chunks.

    Each task has a ``key`` (what the caller needs to know about it when it ends):

    * ``start(key, fn, *args)`` runs ``fn(*args)`` on the pool; ``run_here(key, fn, *args)``
      runs it now on this thread. Either way its outcome (a value or an exception) comes back
      from :meth:`wait` as a finished ``Future``, so the caller handles both alike.
    * :meth:`wait` gives the next finished tasks, as ``(key, future)`` pairs; nothing (an
      empty list) when the deadline passed first: then :meth:`abandon` cancels what still
      runs and names it. The caller never waits past the deadline for a pool thread.
    * :meth:`take_back` cancels the started tasks no pool thread has picked up yet and hands
      them back, to run on this thread: a busy pool slows the caller down, it never
      deadlocks it.
    """

    def __init__(self, deadline: float | None,
                 submit: Callable[..., Future[Any]] = submit) -> None:
        self.deadline = deadline
        self._submit = submit
        self._running: dict[Future[Any], tuple[K, Callable[..., Any], tuple[Any, ...]]] = {}
        self._finished: list[tuple[K, Future[Any]]] = []

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        return seconds_left(self.deadline)

    @property
    def running(self) -> int:
        """How many tasks are on the pool."""
        return len(self._running)

    def start(self, key: K, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the pool."""
        self._running[self._submit(fn, *args)] = (key, fn, args)

    def run_here(self, key: K, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` now, on this thread; its outcome is the next :meth:`wait`'s."""
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the caller reads it from the future, as a pool task's
            future.set_exception(exc)
        self._finished.append((key, future))
        return future

    def wait(self, *, every: bool = False) -> list[tuple[K, Future[Any]]]:
        """The tasks that finished: what ran here since the last call at once, else the
        first pool task to finish (``every=True``: all of them), waiting no longer than the
        deadline. An empty list while tasks still run means the deadline passed."""
        finished, self._finished = self._finished, []
        if (finished and not every) or not self._running:
            return finished
        done, _ = wait(self._running, timeout=self.remaining,
                       return_when="ALL_COMPLETED" if every else "FIRST_COMPLETED")
        return finished + [(self._running.pop(future)[0], future) for future in done]

    def take_back(self) -> list[tuple[K, Callable[..., Any], tuple[Any, ...]]]:
        """The started tasks no pool thread has begun, cancelled there: ``(key, fn, args)``
        each, for this thread to run."""
        return [self._running.pop(future) for future in list(self._running)
                if future.cancel()]

    def abandon(self) -> list[K]:
        """Cancel every task still on the pool (one already running finishes unobserved, its
        result dropped); their keys."""
        keys = []
        for future, (key, _, _) in self._running.items():
            future.cancel()
            keys.append(key)
        self._running.clear()
        return keys
