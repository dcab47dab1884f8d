"""Helpers for tests that read the real standby: commit, then wait for replay."""

from __future__ import annotations

import time

from django.db import connections


def primary_lsn(alias: str = "primary") -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        return str(cursor.fetchone()[0])


def wait_for_replay(primary: str = "primary", replica: str = "replica",
                    timeout: float = 10.0) -> None:
    """Block until the standby has replayed everything the primary has written so far."""
    target = primary_lsn(primary)
    deadline = time.monotonic() + timeout
    with connections[replica].cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            if cursor.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not replay up to {target} in {timeout}s")
            time.sleep(0.02)


def set_replay_paused(paused: bool, replica: str = "replica") -> None:
    with connections[replica].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()" if paused
                       else "SELECT pg_wal_replay_resume()")
