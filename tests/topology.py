"""Helpers for tests that read the real standby (commit, then wait for replay) or stop the
real servers (scripts/services.sh)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from django.db import connections

SERVICES = Path(__file__).resolve().parent.parent / "scripts" / "services.sh"
#: Exists while a test has servers down on purpose (other test runs sharing the servers may
#: then fail with connection errors: they are to be re-run).
FAULT_FLAG = Path("/tmp/datapipe-FAULT-RUN-IN-PROGRESS")


def services(command: str) -> None:
    subprocess.run(["bash", str(SERVICES), command], check=True, capture_output=True,
                   timeout=120)


@contextlib.contextmanager
def stopped(name: str) -> Iterator[None]:
    """``name`` (postgres, replica, mariadb) is down inside the block, up again after it."""
    FAULT_FLAG.touch()
    try:
        services(f"stop-{name}")
        try:
            yield
        finally:
            services(f"start-{name}")
            if name == "postgres":
                services("start-replica")  # make sure the standby streams again
            for alias in connections:
                connections[alias].close()  # the test thread's own connections died with it
            wait_for_stores(STORES.get(name, ()), within=1.0)
    finally:
        FAULT_FLAG.unlink(missing_ok=True)


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


def wait_for_standby(replica: str = "replica", primary: str = "primary",
                     timeout: float = 30.0) -> None:
    """Block until the standby has the test database (the run created it on the primary just
    before: the standby replays the CREATE DATABASE a moment later) and has replayed everything
    the primary wrote so far."""
    from django.db import OperationalError

    deadline = time.monotonic() + timeout
    while True:
        try:
            connections[replica].ensure_connection()
            break
        except OperationalError:
            connections[replica].close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    wait_for_replay(primary, replica, timeout=max(1.0, deadline - time.monotonic()))


def set_replay_paused(paused: bool, replica: str = "replica") -> None:
    with connections[replica].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()" if paused
                       else "SELECT pg_wal_replay_resume()")


#: The database aliases each server of ``stopped()`` serves.
STORES = {"postgres": ("primary", "pooled", "replica"), "replica": ("replica",),
          "mariadb": ("archive", "archive_replica")}


def wait_for_stores(aliases: tuple[str, ...], within: float) -> float:
    """Wait until none of ``aliases`` is refused as down any more (their breakers closed, see
    datapipe_django.stores): the promise is within a second of the server being back."""
    from datapipe_django.stores import get_store_guard

    start = time.monotonic()
    while any(get_store_guard(a).is_open for a in aliases):
        if time.monotonic() - start > within:
            raise AssertionError(f"still refused {within}s after the server came back: "
                                 f"{[a for a in aliases if get_store_guard(a).is_open]}")
        time.sleep(0.005)
    return time.monotonic() - start
