"""What the benchmark scripts share: their Django settings, a timed request, the PostgreSQL
database they create and the rows they seed (the test suite's ``Item`` model, deterministic)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import random
import sys
import time
from typing import Any

HINT = "start it with `bash scripts/services.sh start`"


def configure(**overrides: Any) -> None:
    """``settings.configure()`` with ``benchmarks/settings.py`` (no middleware, no
    authentication, DEBUG off, the test app installed), ``overrides`` replacing its values."""
    from django.conf import settings

    from benchmarks import settings as base

    values = {name: getattr(base, name) for name in dir(base) if name.isupper()}
    settings.configure(**{**values, **overrides})


def timed_get(view: Any, params: dict[str, Any], **headers: Any) -> tuple[float, Any]:
    """GET ``params`` through ``view``, rendered: (seconds, response); exits on a non-200."""
    from django.test import RequestFactory

    request = RequestFactory().get("/items", params, **headers)
    start = time.perf_counter()
    response = view(request)
    response.render()
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"{params}: HTTP {response.status_code}: {response.content[:300]!r}")
    return elapsed, response


def machine() -> str:
    """The header line every run records: UTC time, CPUs, load average and Python version."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, "
            f"load average {load}; Python {platform.python_version()}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ensure_postgres_database(host: str, port: int, name: str) -> None:
    """Create database ``name`` if missing; exit with a hint when PostgreSQL is down."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres",
                             connect_timeout=3, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (name,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        sys.exit(f"PostgreSQL is not reachable at {host}:{port} ({first_line(exc)}); {HINT}")


def seed_items(count: int, tenants: tuple[str, ...] | list[str]) -> bool:
    """Make the ``Item`` table hold exactly ``count`` deterministic rows spread over
    ``tenants`` (after ``migrate --run-syncdb``). True when it had to (re)write them."""
    from django.core.management import call_command

    from tests.testapp.models import Item

    call_command("migrate", run_syncdb=True, verbosity=0)
    if Item.objects.count() == count:
        return False
    Item.objects.all().delete()
    rng = random.Random(7)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(count):
        created = start + dt.timedelta(minutes=rng.randrange(200_000))
        rows.append(Item(
            id=i + 1, tenant=tenants[i % len(tenants)], name=f"item {i}",
            status=rng.choice(Item.Status.values), amount=rng.randrange(1, 1_000_000),
            active=rng.random() < 0.8, created_at=created, day=created.date(),
            score=None if rng.random() < 0.2 else rng.randrange(100),
        ))
    Item.objects.bulk_create(rows, batch_size=2_000)
    return True
