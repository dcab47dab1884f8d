"""Replica health: how far behind each replica is, measured cheaply and never trusted past
the bound.

A replica is read only while its last measured lag plus the age of that measurement is at most
``DATAPIPE["REPLICA_MAX_LAG"]`` seconds: a lag of 0.4 s measured 3 s ago means the replica may
now be 3.4 s behind. :func:`replica_status` answers from a per-process cache while that holds,
and measures again, on the calling thread and within the caller's ``timeout``, once it no longer
does, so the bound holds however sparse the traffic. Under steady traffic one background thread
re-measures a healthy replica every ``REPLICA_CHECK_INTERVAL`` seconds, so a request rarely pays
for a measurement. A replica measured as behind (or whose lag is unknown) is measured again at
its next use, so one that caught up is read again at once; concurrent callers share one
measurement (single flight). An unreachable replica is skipped without waiting while its store's
breaker is open (:mod:`datapipe_django.stores`), and measured again at its first use once the
store answers, so a replica that is back is read again at once.

Lag is measured on the replica itself, per database vendor, by a *lag probe*
``(connection) -> float | None`` (seconds; None: unknown, which counts as unhealthy).
PostgreSQL and MySQL/MariaDB probes ship; :func:`register_lag_probe` adds or replaces one
(e.g. a TiDB or Aurora replica's own lag query).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections

from datapipe_django.conf import datapipe_settings
from datapipe_django.errors import SourceUnavailable, first_line
from datapipe_django.stores import get_store_guard, use_store

__all__ = [
    "ReplicaStatus",
    "forget_replica_status",
    "healthy_replicas",
    "register_lag_probe",
    "replica_status",
]

LagProbe = Callable[[Any], "float | None"]

# On a PostgreSQL standby: unknown (NULL) while it is not streaming from its primary (its WAL
# receiver is gone or reconnecting: the primary may have written what it never received);
# else 0 when everything received has been replayed; otherwise the age of the last replayed
# transaction. (pg_stat_replication.replay_lag reads ~0 while replay is paused, and
# now() - pg_last_xact_replay_timestamp() alone grows on an idle primary.) A role without
# pg_read_all_stats sees the WAL receiver's row but not its status: the row is then enough.
_PG_LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver
                     WHERE status IS NULL OR status = 'streaming') THEN NULL
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
END
"""


def _postgresql_lag(connection: Any) -> float | None:
    with connection.cursor() as cursor:
        cursor.execute(_PG_LAG_SQL)
        row = cursor.fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def _mysql_lag(connection: Any) -> float | None:
    statement = "SHOW SLAVE STATUS" if connection.mysql_is_mariadb else "SHOW REPLICA STATUS"
    with connection.cursor() as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
        if row is None:
            return 0.0  # not a replica of anything: it is its own source of truth
        columns = [c[0] for c in cursor.description]
    for name in ("Seconds_Behind_Source", "Seconds_Behind_Master"):
        if name in columns:
            value = row[columns.index(name)]
            return None if value is None else float(value)
    return None


_probes: dict[str, LagProbe] = {"postgresql": _postgresql_lag, "mysql": _mysql_lag}


def register_lag_probe(vendor: str, probe: LagProbe) -> None:
    """Use ``probe(connection) -> seconds | None`` for replicas whose
    ``connection.vendor`` is ``vendor`` (``"postgresql"``, ``"mysql"``, ``"sqlite"``...)."""
    _probes[vendor] = probe


@dataclass(frozen=True)
class ReplicaStatus:
    """One measurement of a replica: ``healthy`` (reachable, lag within ``REPLICA_MAX_LAG``
    when measured), ``lag`` in seconds (None: unknown or unreachable), why it is not healthy,
    and when it was measured (``time.monotonic()``)."""

    alias: str
    healthy: bool
    lag: float | None
    reason: str
    checked_at: float
    reachable: bool = True
    primary_down: bool = False  # healthy only because its primary is down (not replicating)

    def age(self, now: float | None = None) -> float:
        """Seconds since the measurement."""
        return max(0.0, (time.monotonic() if now is None else now) - self.checked_at)

    def within(self, max_lag: float, now: float | None = None) -> bool:
        """Whether the replica is, at worst, ``max_lag`` seconds behind now: healthy when
        measured, its lag plus the age of the measurement within ``max_lag`` and, if it was
        healthy only because its primary was down, the primary still down."""
        if self.primary_down and not _primary_down(self.alias):
            return False
        return self.healthy and (self.lag or 0.0) + self.age(now) <= max_lag


_cache: dict[str, ReplicaStatus] = {}
_inflight: dict[str, threading.Event] = {}  # alias -> set when its running measurement ends
_lock = threading.Lock()

#: How long a caller without a deadline waits for a measurement (seconds).
DEFAULT_MEASURE_TIMEOUT = 1.0


def _measure(alias: str, timeout: float | None) -> ReplicaStatus:
    """Measure ``alias`` now, on this thread's connection, its query bounded by ``timeout``."""
    connection = connections[alias]
    now = time.monotonic()
    try:
        probe = _probes.get(connection.vendor)
        # A replica known to be down is refused at once; the connection wait is bounded.
        with use_store(alias, timeout):
            lag = probe(connection) if probe is not None else 0.0
    except (DatabaseError, SourceUnavailable) as exc:
        # Drop the broken connection so the next probe reconnects (the server may be back).
        with contextlib.suppress(DatabaseError):
            connection.close()
        return ReplicaStatus(alias, False, None, f"unreachable: {first_line(exc)}", now,
                             reachable=False)
    max_lag = float(datapipe_settings.REPLICA_MAX_LAG)
    if lag is None and _primary_down(alias, check_within=timeout):
        # Not replicating because its primary is down: nothing can have been written that it
        # lacks, so it is as fresh as any store there is, until the primary answers again.
        return ReplicaStatus(alias, True, 0.0, "", now, primary_down=True)
    if lag is None:
        return ReplicaStatus(alias, False, None, "lag unknown", now)
    if lag > max_lag:
        return ReplicaStatus(alias, False, lag, f"lag {lag:.1f}s > REPLICA_MAX_LAG {max_lag:g}s",
                             now)
    return ReplicaStatus(alias, True, lag, "", now)


def _primary_down(alias: str, *, check_within: float | None = None) -> bool:
    """Whether ``alias`` is a replica of ``DATAPIPE["PRIMARY"]`` and that primary is down: its
    breaker is open (see :mod:`datapipe_django.stores`) or, with ``check_within`` (seconds), a
    query on it fails to connect now."""
    if alias not in datapipe_settings.REPLICAS:
        return False
    primary = str(datapipe_settings.PRIMARY)
    guard = get_store_guard(primary)
    if not guard.allow() or check_within is None or primary not in connections.settings:
        return not guard.allow()
    for _ in range(2):  # a connection lost with a restart is dropped, then one is made
        try:
            with use_store(primary, check_within) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return False
        except (DatabaseError, SourceUnavailable):
            if not guard.allow():
                return True
    return not guard.allow()


def _claim(alias: str) -> tuple[threading.Event, bool]:
    """The event of the measurement of ``alias`` under way, and whether the caller is to run
    it (True: nobody was measuring, the caller must call :func:`_publish`)."""
    with _lock:
        event = _inflight.get(alias)
        if event is not None:
            return event, False
        event = _inflight[alias] = threading.Event()
        return event, True


def _publish(alias: str, event: threading.Event, status: ReplicaStatus | None) -> None:
    with _lock:
        if status is not None:
            _cache[alias] = status
        if _inflight.get(alias) is event:
            del _inflight[alias]
    event.set()


def _measure_now(alias: str, timeout: float) -> ReplicaStatus:
    """A measurement taken after this call started: this thread's, or the one another thread
    was already taking (waited for within ``timeout``)."""
    started = time.monotonic()
    event, mine = _claim(alias)
    if mine:
        measured: ReplicaStatus | None = None
        try:
            measured = _measure(alias, timeout)
        finally:
            _publish(alias, event, measured)
        return measured
    event.wait(timeout)
    with _lock:
        status = _cache.get(alias)
    if status is not None and status.checked_at >= started - 0.001:
        return status
    if status is not None and status.within(float(datapipe_settings.REPLICA_MAX_LAG)):
        return status  # the shared measurement is late, but the last one still holds
    return ReplicaStatus(alias, False, None if status is None else status.lag,
                         "not measured in time", time.monotonic(),
                         reachable=status is None or status.reachable)


def _refresh_in_background(alias: str) -> None:
    event, mine = _claim(alias)
    if not mine:
        return

    def run() -> None:
        status: ReplicaStatus | None = None
        try:
            status = _measure(alias, DEFAULT_MEASURE_TIMEOUT)
        finally:
            connections[alias].close()
            _publish(alias, event, status)

    threading.Thread(target=run, name=f"datapipe-replica-{alias}", daemon=True).start()


def replica_status(alias: str, *, timeout: float | None = None) -> ReplicaStatus:
    """The health of replica ``alias``, as of now.

    * A healthy measurement is used while its lag plus its age is within ``REPLICA_MAX_LAG``
      (refreshed in the background once older than ``REPLICA_CHECK_INTERVAL``); past that, and
      for a replica measured as behind or of unknown lag, the replica is measured again before
      this returns, within ``timeout`` seconds (the caller's remaining deadline; default
      :data:`DEFAULT_MEASURE_TIMEOUT`). A measurement that does not finish in time makes the
      replica unhealthy for this call (``"not measured in time"``).
    * An unreachable replica is reported as such at once while its store's breaker is open
      (measured again in the background once older than ``REPLICA_CHECK_INTERVAL``); once the
      store answers again, it is measured before this returns, as above.
    """
    max_lag = float(datapipe_settings.REPLICA_MAX_LAG)
    interval = float(datapipe_settings.REPLICA_CHECK_INTERVAL)
    now = time.monotonic()
    with _lock:
        status = _cache.get(alias)
    if status is not None:
        if status.within(max_lag, now):
            # Refresh early enough that steady traffic never finds the bound expired.
            margin = max_lag - (status.lag or 0.0)
            if status.age(now) > min(interval, margin / 2):
                _refresh_in_background(alias)
            return status
        if not status.reachable and not get_store_guard(alias).allow():
            # Down: skipped without waiting (the store's prober watches for its return). Once
            # its store answers again it is measured now, so a replica that is back is read
            # at once.
            if status.age(now) > interval:
                _refresh_in_background(alias)
            return status
    wait = DEFAULT_MEASURE_TIMEOUT if timeout is None else max(0.0, timeout)
    return _measure_now(alias, wait)


def healthy_replicas(*, timeout: float | None = None) -> list[str]:
    """The configured replicas (``DATAPIPE["REPLICAS"]``) that are healthy now, in order."""
    return [alias for alias in datapipe_settings.REPLICAS
            if replica_status(alias, timeout=timeout).healthy]


def forget_replica_status(alias: str | None = None) -> None:
    """Drop cached health (all replicas, or one) so the next call measures afresh (for tools
    such as ``manage.py datapipe health`` that must report a measurement of their own)."""
    with _lock:
        if alias is None:
            _cache.clear()
        else:
            _cache.pop(alias, None)
