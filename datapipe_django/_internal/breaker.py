"""The circuit breaker: a dependency that failed is skipped until it has recovered.

One class, :class:`Breaker`, holds the state (closed or open, the failures seen, the last
error); how an open breaker closes again is its :class:`Recovery` policy:

* :class:`TimedProbe` (each cache alias, a ``BatchEnricher``'s service): callers are refused
  for ``seconds``; then one caller at a time probes: success closes it, failure opens it again;
* :class:`Cooldown` (a search engine, for its fetcher and for the index sync): callers are
  refused for ``seconds`` after the last failure; then it closes by itself;
* :class:`BackgroundProbe` (each database alias): callers are refused while a thread checks
  the dependency at once, then every ``interval`` seconds; the first success closes it.

``seconds`` and ``interval`` are numbers or zero-argument callables (a setting read when the
breaker opens, so ``override_settings`` applies). :class:`Breakers` holds a process's breakers
of one kind, one per name (each cache alias, each database alias).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from datapipe_django.errors import failure_reason

__all__ = ["BackgroundProbe", "Breaker", "Breakers", "Cooldown", "Recovery", "TimedProbe"]

_sleep = time.sleep  # the prober's; ``time.monotonic`` is looked up at each call (a test clock)

Seconds = float | Callable[[], Any]


def _seconds(value: Seconds) -> float:
    return float(value() if callable(value) else value)


class Recovery:
    """How an open :class:`Breaker` closes. ``restarts``: a failure while open starts the open
    period again (and is logged again)."""

    restarts = True

    def duration(self) -> float:
        """Seconds the breaker refuses every caller after a failure (``inf``: until closed)."""
        return float("inf")

    def admits(self, breaker: Breaker, now: float) -> bool:
        """Whether a caller may try while the breaker is open (called under its lock)."""
        return False

    def opened(self, breaker: Breaker) -> None:
        """The breaker has just opened (called outside its lock)."""

    def meanwhile(self) -> str:
        """What happens while open, for the log line."""
        return f"answering without it for {self.duration():.1f}s"


class TimedProbe(Recovery):
    """After ``seconds``, one caller at a time probes the dependency."""

    def __init__(self, seconds: Seconds) -> None:
        self.seconds = seconds

    def duration(self) -> float:
        return max(_seconds(self.seconds), 0.001)

    def meanwhile(self) -> str:
        return f"answering without it for {_seconds(self.seconds):.1f}s"

    def admits(self, breaker: Breaker, now: float) -> bool:
        if breaker._probing or now < breaker.open_until:
            return False
        breaker._probing = True
        return True


class Cooldown(Recovery):
    """``seconds`` after the last failure the breaker closes by itself (0: it never refuses)."""

    def __init__(self, seconds: Seconds) -> None:
        self.seconds = seconds

    def duration(self) -> float:
        return max(_seconds(self.seconds), 0.0)

    def admits(self, breaker: Breaker, now: float) -> bool:
        if now < breaker.open_until:
            return False
        breaker._close_locked()
        return True


class BackgroundProbe(Recovery):
    """While open, a daemon thread calls ``reachable()`` at once, then every ``interval``
    seconds; the first True runs ``on_recover()`` and closes the breaker."""

    restarts = False

    def __init__(self, reachable: Callable[[], bool], *, interval: Seconds,
                 on_recover: Callable[[], Any] | None = None,
                 meanwhile: str = "callers skip it until it answers") -> None:
        self.reachable = reachable
        self.interval = interval
        self.on_recover = on_recover
        self._meanwhile = meanwhile

    def meanwhile(self) -> str:
        return self._meanwhile

    def opened(self, breaker: Breaker) -> None:
        threading.Thread(target=self._probe, args=(breaker,), daemon=True,
                         name=f"datapipe-probe-{breaker.name}").start()

    def _probe(self, breaker: Breaker) -> None:
        # At once first: a dependency that is already back costs milliseconds, not an interval.
        while breaker.is_open:
            if self.reachable():
                if self.on_recover is not None:
                    self.on_recover()
                breaker.close()
                return
            _sleep(max(0.01, _seconds(self.interval)))


class Breaker:
    """The circuit breaker of one dependency ``name`` (one per process, shared by threads).

    Closed: :meth:`allow` is True. :meth:`failed` opens it: callers are refused until its
    ``recovery`` policy lets them in again; :meth:`succeeded` (or :meth:`close`) closes it.
    ``failures`` counts every failure, ``last_error`` is the latest; ``opened_at``,
    ``failed_at`` and ``last_success`` are ``time.monotonic()`` instants (None or 0.0: never).
    With a ``logger``, opening and closing are logged as ``"<label> '<name>' is unavailable
    (<error>); <what happens meanwhile>."`` and ``"... is reachable again; <resume>."``.
    """

    def __init__(self, name: str, recovery: Recovery, *, label: str = "Dependency",
                 logger: logging.Logger | None = None, resume: str = "using it") -> None:
        self.name = name
        self.recovery = recovery
        self.label = label
        self.logger = logger
        self.resume = resume
        self.failures = 0
        self.last_error = ""
        self.opened_at: float | None = None
        self.failed_at: float | None = None
        self.open_until = 0.0
        self.last_success = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether the caller may use the dependency now (when open: as the policy says)."""
        if self.opened_at is None:
            return True
        with self._lock:
            if self.opened_at is None:
                return True
            return self.recovery.admits(self, time.monotonic())

    def failed(self, error: BaseException | str) -> None:
        """Record a failure (an exception, or why in words): open the breaker, or, when it is
        open and the policy ``restarts``, start its open period again."""
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            self.last_error = error if isinstance(error, str) else failure_reason(error)
            self.failed_at = now
            newly = self.opened_at is None
            if newly:
                self.opened_at = now
            if newly or self.recovery.restarts:
                self.open_until = now + self.recovery.duration()
            self._probing = False
        if self.logger is not None and (newly or self.recovery.restarts):
            self.logger.warning("%s %r is unavailable (%s); %s.", self.label, self.name,
                                self.last_error, self.recovery.meanwhile())
        if newly:
            self.recovery.opened(self)

    def succeeded(self) -> None:
        """A call succeeded: close the breaker if it was open."""
        self.last_success = time.monotonic()
        if self.opened_at is not None:
            self.close()

    def close(self) -> None:
        """Close the breaker (the dependency answered), logging it when it was open."""
        with self._lock:
            was_open = self.opened_at is not None
            self._close_locked()
        if was_open and self.logger is not None:
            self.logger.warning("%s %r is reachable again; %s.", self.label, self.name,
                                self.resume)

    def release_probe(self) -> None:
        """End a probe that made no call (the breaker stays as it is)."""
        if self._probing:
            with self._lock:
                self._probing = False

    def reset(self) -> None:
        """Close the breaker quietly (tests, a process that knows better)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self.opened_at, self.open_until, self._probing = None, 0.0, False

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<{type(self).__name__} {self.name!r} {state}, {self.failures} failure(s)>"


_B = TypeVar("_B", bound=Breaker)


class Breakers(Generic[_B]):
    """The process-wide breakers of one kind: one per name, made by ``make(name)`` on first
    use and shared by every thread from then on."""

    def __init__(self, make: Callable[[str], _B]) -> None:
        self._make = make
        self._by_name: dict[str, _B] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> _B:
        """The breaker of ``name``."""
        breaker = self._by_name.get(name)
        if breaker is None:
            with self._lock:
                breaker = self._by_name.setdefault(name, self._make(name))
        return breaker

    def values(self) -> list[_B]:
        """The breakers made so far."""
        return list(self._by_name.values())

    def clear(self) -> None:
        """Forget every breaker (the next :meth:`get` of a name makes a new, closed one)."""
        self._by_name.clear()
