"""Read-your-writes: keep a client's reads on the primary right after it wrote.

Two ways in:

* :class:`ReadYourWritesMiddleware` (Django middleware): a response to an unsafe method
  (POST, PUT, PATCH, DELETE) sets a signed cookie; for ``DATAPIPE["PIN_AFTER_WRITE"]``
  seconds the same client's requests read from the primary.
* :func:`use_primary`: a context manager and decorator for code paths that must read what
  they (or anyone) just wrote::

      with use_primary():
          payouts.execute(request)

The state lives in a :mod:`contextvars` variable, so it is per request under threads and under
async, and it follows work submitted to the pipeline's thread pool.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable
from contextlib import ContextDecorator

from django.http import HttpRequest, HttpResponse

from datapipe_django.conf import datapipe_settings

__all__ = [
    "COOKIE_NAME",
    "ReadYourWritesMiddleware",
    "current_scope",
    "is_pinned",
    "request_scope",
    "use_primary",
]

COOKIE_NAME = "datapipe_pin"
_SALT = "datapipe_django.pin"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CLOCK_SKEW = 1.0  # seconds a signed stamp may be ahead of this server's clock
_clock = time.time

_pinned: contextvars.ContextVar[bool] = contextvars.ContextVar("datapipe_pinned", default=False)


#: Per-request choices (the replica the router picked); None outside a request scope.
_scope: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "datapipe_request_scope", default=None
)


class request_scope:
    """Within the block, per-request choices (the router's replica) are kept and reused."""

    def __enter__(self) -> request_scope:
        self._token = _scope.set({})
        return self

    def __exit__(self, *exc: object) -> None:
        _scope.reset(self._token)


def current_scope() -> dict[str, str] | None:
    """The current request scope's choices, or None outside a scope."""
    return _scope.get()


def is_pinned() -> bool:
    """True when reads in the current context must go to the primary."""
    return _pinned.get()


class use_primary(ContextDecorator):
    """Read from the primary inside the block (or the decorated function)."""

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token[bool]] = []

    def __enter__(self) -> use_primary:
        self._tokens.append(_pinned.set(True))
        return self

    def __exit__(self, *exc: object) -> None:
        _pinned.reset(self._tokens.pop())


class ReadYourWritesMiddleware:
    """Pins a client's reads to the primary for ``PIN_AFTER_WRITE`` seconds after it wrote.

    Add it to ``MIDDLEWARE``. The pin travels in a signed cookie, so it works across processes
    and servers without shared state.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        window = float(datapipe_settings.PIN_AFTER_WRITE)
        token = _pinned.set(self.wrote_recently(request, window) or _pinned.get())
        try:
            with request_scope():
                response = self.get_response(request)
        finally:
            _pinned.reset(token)
        if window > 0 and request.method in _UNSAFE and response.status_code < 400:
            # Truncated, never rounded: a rounded-up stamp would read as "in the future".
            stamp = f"{math.floor(_clock() * 1000) / 1000:.3f}"
            response.set_signed_cookie(COOKIE_NAME, stamp, salt=_SALT,
                                       max_age=math.ceil(window), httponly=True, samesite="Lax")
        return response

    @staticmethod
    def wrote_recently(request: HttpRequest, window: float) -> bool:
        """Whether the signed cookie says this client wrote less than ``window`` s ago."""
        if window <= 0:
            return False
        value = request.get_signed_cookie(COOKIE_NAME, default=None, salt=_SALT)
        try:
            # Web servers' clocks differ a little; a stamp slightly ahead still pins.
            return value is not None and -_CLOCK_SKEW <= _clock() - float(value) <= window
        except ValueError:
            return False


