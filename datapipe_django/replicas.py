"""Replica health: how far behind each replica is, measured cheaply and cached.

``replica_status(alias)`` answers from a cache refreshed about once a second
(``REPLICA_CHECK_INTERVAL``); a stale entry is served while one background thread refreshes
it, so a request pays nothing but a dictionary lookup. A replica is *healthy* when it answers
and its lag is at most ``DATAPIPE["REPLICA_MAX_LAG"]`` seconds.

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

__all__ = [
    "ReplicaStatus",
    "forget_replica_status",
    "healthy_replicas",
    "register_lag_probe",
    "replica_status",
]

LagProbe = Callable[[Any], "float | None"]

# On a PostgreSQL standby: 0 when everything received has been replayed; otherwise the age of
# the last replayed transaction. (pg_stat_replication.replay_lag reads ~0 while replay is
# paused, and now() - pg_last_xact_replay_timestamp() alone grows on an idle primary.)
_PG_LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
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
    alias: str
    healthy: bool
    lag: float | None
    reason: str
    checked_at: float


_cache: dict[str, ReplicaStatus] = {}
_refreshing: set[str] = set()
_lock = threading.Lock()


def _measure(alias: str) -> ReplicaStatus:
    connection = connections[alias]
    now = time.monotonic()
    try:
        probe = _probes.get(connection.vendor)
        lag = probe(connection) if probe is not None else 0.0
    except DatabaseError as exc:
        # Drop the broken connection so the next probe reconnects (the server may be back).
        with contextlib.suppress(DatabaseError):
            connection.close()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ReplicaStatus(alias, False, None, f"unreachable: {reason}", now)
    max_lag = float(datapipe_settings.REPLICA_MAX_LAG)
    if lag is None:
        return ReplicaStatus(alias, False, None, "lag unknown", now)
    if lag > max_lag:
        return ReplicaStatus(alias, False, lag, f"lag {lag:.1f}s > REPLICA_MAX_LAG {max_lag:g}s",
                             now)
    return ReplicaStatus(alias, True, lag, "", now)


def _refresh_in_background(alias: str) -> None:
    def run() -> None:
        try:
            status = _measure(alias)
            with _lock:
                _cache[alias] = status
        finally:
            connections[alias].close()
            with _lock:
                _refreshing.discard(alias)

    threading.Thread(target=run, name=f"datapipe-replica-{alias}", daemon=True).start()


def replica_status(alias: str) -> ReplicaStatus:
    """The health of replica ``alias``: measured now on first use, then from a cache that a
    background thread refreshes once it is older than ``REPLICA_CHECK_INTERVAL`` seconds."""
    interval = float(datapipe_settings.REPLICA_CHECK_INTERVAL)
    with _lock:
        status = _cache.get(alias)
        stale = status is None or time.monotonic() - status.checked_at > interval
        refresh = stale and status is not None and alias not in _refreshing
        if refresh:
            _refreshing.add(alias)
    if status is None:
        status = _measure(alias)
        with _lock:
            _cache[alias] = status
    elif refresh:
        _refresh_in_background(alias)
    return status


def healthy_replicas() -> list[str]:
    """The configured replicas (``DATAPIPE["REPLICAS"]``) that are healthy now, in order."""
    return [alias for alias in datapipe_settings.REPLICAS if replica_status(alias).healthy]


def forget_replica_status(alias: str | None = None) -> None:
    """Drop cached health (all replicas, or one) so the next call measures afresh."""
    with _lock:
        if alias is None:
            _cache.clear()
        else:
            _cache.pop(alias, None)
