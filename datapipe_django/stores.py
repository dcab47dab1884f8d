"""Isolation between stores: one database that is down never costs the others their time.

Every read a pipeline makes on a database alias (a fetcher's query, an enricher's prefetch, a
replica's lag probe) runs inside :func:`use_store`, which bounds what a dead store can cost:

* **Connecting is bounded.** Waiting for a connection, a pooled one (psycopg 3's pool) or a new
  one, takes at most ``DATAPIPE["STORE_CONNECT_TIMEOUT"]`` seconds, and never more than what
  is left of the request's deadline. (psycopg's pool would otherwise wait its own ``timeout``,
  30 s by default, for a connection to a server that is gone.)
* **A store that failed is skipped at once.** A connection failure (refused, reset, the server
  shutting down, no pooled connection in time) opens the alias's breaker, a
  :class:`StoreGuard`: reads of that alias then fail immediately with
  :class:`~datapipe_django.errors.SourceUnavailable`, so the chain and the enrichers go to the
  next source or a mirror without waiting, and no worker thread of the shared pool is held by
  the dead store. A query cut by its statement timeout (a slow query, not a dead server)
  opens nothing.
* **Recovery is immediate.** While the breaker is open, one background thread per alias tries
  a fresh connection at once, then every ``DATAPIPE["STORE_RETRY_INTERVAL"]`` seconds. The
  first that succeeds closes the breaker; a psycopg pool is replaced by a new one at that
  moment, since the old one would otherwise keep backing off its reconnection attempts (1, 2,
  4, 8 s...).

:func:`mirrors` names the aliases that hold the same rows as another (a primary and its
replicas), where an enricher reads when the row's own database is down.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections

from datapipe_django._internal.breaker import BackgroundProbe, Breaker, Breakers
from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import SourceUnavailable, is_connection_failure
from datapipe_django.timeouts import statement_timeout

__all__ = [
    "StoreGuard",
    "get_store_guard",
    "is_connection_failure",
    "mirrors",
    "use_store",
]

logger = logging.getLogger("datapipe_django.stores")

#: ``time.monotonic()`` instant by which a connection must be handed out on this context.
_connect_by: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "datapipe_connect_by", default=None)

class StoreGuard(Breaker):
    """The breaker of one database alias (one per process, shared by every thread): a
    :class:`~datapipe_django._internal.breaker.Breaker` that recovers through a background
    prober.

    Closed: reads go through. :meth:`failed` with a connection failure opens it: reads are
    refused at once (:meth:`allow` is False) while a background thread tries a fresh connection
    at once, then every ``STORE_RETRY_INTERVAL`` seconds; the first success renews the alias's
    pool and closes it. ``failures`` counts the connection failures seen; ``last_error`` is the
    latest.
    """

    def __init__(self, alias: str) -> None:
        super().__init__(
            alias,
            BackgroundProbe(lambda: _reachable(alias), interval=_retry_interval,
                            on_recover=lambda: _renew_pool(alias),
                            meanwhile="reads skip it until it answers"),
            label="Database", logger=logger, resume="reading it")

    @property
    def alias(self) -> str:
        return self.name


def _retry_interval() -> float:
    return float(datapipe_settings.STORE_RETRY_INTERVAL)


_guards: Breakers[StoreGuard] = Breakers(StoreGuard)


def get_store_guard(alias: str) -> StoreGuard:
    """The process-wide :class:`StoreGuard` of database ``alias``."""
    return _guards.get(alias)


@contextlib.contextmanager
def use_store(alias: str, seconds: float | None) -> Iterator[Any]:
    """Run database work on ``alias`` within ``seconds`` (the caller's remaining deadline;
    None: no deadline), isolated from the other stores (see the module doc). Yields the
    connection.

    Raises :class:`~datapipe_django.errors.SourceUnavailable` at once while the alias is known
    to be down. A connection failure inside the block opens its breaker; any
    ``OperationalError``/``InterfaceError`` closes this thread's connection (outside a
    transaction) so that the next use reconnects, and is re-raised.
    """
    guard = get_store_guard(alias)
    if not guard.allow():
        raise SourceUnavailable(alias, f"down ({guard.last_error}); retried in the background")
    connection = connections[alias]
    pooled = _bound_pool_wait(connection)
    connected = connection.connection is not None
    budget = float(datapipe_settings.STORE_CONNECT_TIMEOUT)
    if seconds is not None:
        budget = min(budget, max(0.0, seconds))
    token = _connect_by.set(time.monotonic() + budget)
    try:
        with statement_timeout(connection, seconds):
            yield connection
    except (OperationalError, InterfaceError) as exc:
        if not connection.in_atomic_block:
            with contextlib.suppress(DatabaseError):
                connection.close()
        # A connection that could not be made, or a pooled one that was dead (the pool may
        # hold more such, and backs off reconnecting: renewed when the store answers), opens
        # the breaker. An established connection that was lost (the server restarted since)
        # is only closed: the next use reconnects, and opens it if the server is down.
        if is_connection_failure(exc) and (pooled or not connected):
            guard.failed(exc)
        raise
    finally:
        _connect_by.reset(token)


def mirrors(alias: str) -> list[str]:
    """The other aliases that hold the rows of ``alias``: a primary's replicas, or a replica's
    primary and then its sibling replicas (``DATAPIPE["PRIMARY"]`` and ``["REPLICAS"]``).
    An archive, or any other alias, has none."""
    primary = str(datapipe_settings.PRIMARY)
    replicas = [str(r) for r in datapipe_settings.REPLICAS]
    if alias == primary:
        return replicas
    if alias in replicas:
        return [primary, *(r for r in replicas if r != alias)]
    return []


# -- connection waits ---------------------------------------------------------------------------

def _deadline_pool_class(cls: Any) -> type:
    """A subclass of the psycopg pool class ``cls`` whose ``getconn()`` waits no longer than
    this context allows (:data:`_connect_by`)."""

    def getconn(self: Any, timeout: float | None = None) -> Any:
        by = _connect_by.get()
        if by is not None:
            left = max(0.0, by - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        return cls.getconn(self, timeout)

    return type(f"Deadline{cls.__name__}", (cls,), {"getconn": getconn,
                                                    "_datapipe_bounded": True})


_pool_classes: dict[type, type] = {}


def _bound_pool_wait(connection: Any) -> bool:
    """Make the alias's psycopg pool (if it has one) honour :data:`_connect_by`; whether it
    has one."""
    if connection.vendor != "postgresql" or not connection.settings_dict.get(
            "OPTIONS", {}).get("pool"):
        return False
    pool = connection.pool  # Django creates it on first use
    if pool is None:
        return False
    if getattr(pool, "_datapipe_bounded", False):
        return True
    cls = type(pool)
    bounded = _pool_classes.get(cls)
    if bounded is None:
        bounded = _pool_classes.setdefault(cls, _deadline_pool_class(cls))
    pool.__class__ = bounded  # same object and state; only getconn() changes
    return True


def _renew_pool(alias: str) -> None:
    """Replace the alias's psycopg pool with a fresh one (connections still out are closed
    when they are given back to the old one, which is closed in the background)."""
    connection: Any = connections[alias]
    if connection.vendor != "postgresql" or not connection.settings_dict.get(
            "OPTIONS", {}).get("pool"):
        return
    pools = type(connection)._connection_pools  # Django's per-alias pools
    old = pools.pop(alias, None)
    if old is not None:
        threading.Thread(target=old.close, kwargs={"timeout": 5.0}, daemon=True,
                         name=f"datapipe-pool-close-{alias}").start()


def _reachable(alias: str) -> bool:
    """Whether a fresh connection to ``alias`` can be opened now (outside any pool)."""
    wrapper: Any = connections.create_connection(alias)
    try:
        params = wrapper.get_connection_params()
        if wrapper.vendor in ("postgresql", "mysql"):
            params.setdefault("connect_timeout", 2)  # libpq's least; MySQLdb's seconds
        raw = wrapper.Database.connect(**params)
        raw.close()
        return True
    except Exception:  # any failure to connect is "not yet"
        return False
