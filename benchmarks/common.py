"""What the benchmark scripts share: their Django settings, a timed request, the PostgreSQL
database they create, the rows they seed (the test suite's ``Item`` model, deterministic), and
the one way every table is measured (:func:`interleaved` rounds, :func:`fmt`'s median and
p10-p90, :func:`round_ratios`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
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
    """The header line every run records: UTC time, CPUs (and their model), the load average
    and the Python version."""
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs"
            f"{f' ({model})' if model else ''}, load average {load}; Python "
            f"{platform.python_version()}")


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


# -- interleaved rounds and their spread ------------------------------------------------------
#
# Every table of every script is measured the same way: the sides compared run interleaved
# (a, b, a, b, ...; which goes first alternates from one round to the next), in several
# rounds; a figure is the median of its rounds with the p10-p90 of the rounds beside it, and a
# ratio is taken per round (the median of that round's per-pair ratios), so that a slow spell
# of the shared machine lands on both sides of the ratio it disturbs.


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of ``values`` (all three the value itself when there is one)."""
    if not values:
        raise ValueError("spread() of no values")
    if len(values) < 2:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), deciles[0], deciles[8]


def fmt(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``"median (p10-p90)"`` of ``values`` times ``scale``."""
    med, lo, hi = spread(values)
    return f"{med * scale:.{digits}f} ({lo * scale:.{digits}f}-{hi * scale:.{digits}f})"


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(sides: Mapping[str, Callable[[], Any]], rounds: int, n: int, *,
                warmup: int = 0, back_to_back: bool = False) -> dict[str, list[list[float]]]:
    """``rounds`` rounds of ``n`` timed calls of every side: ``{side: [[seconds] per round]}``.

    Within a round the sides alternate call by call (a, b, c, a, b, c, ...) and the side that
    goes first rotates from round to round. ``back_to_back``: within a round, each side's ``n``
    calls in a row instead (the order of the sides still rotating), which gives every side the
    CPU caches and connections to itself. ``warmup`` untimed calls of every side come first.
    """
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    out: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        batch: dict[str, list[float]] = {name: [] for name in names}
        if back_to_back:
            for name in order:
                batch[name] = [timed(sides[name]) for _ in range(n)]
        else:
            for _ in range(n):
                for name in order:
                    batch[name].append(timed(sides[name]))
        for name in names:
            out[name].append(batch[name])
    return out


def round_medians(rounds: Sequence[Sequence[float]]) -> list[float]:
    """The median of each round."""
    return [statistics.median(r) for r in rounds]


def round_ratios(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[float]:
    """Per round, the median of the per-pair ratios ``a / b`` (the i-th call of ``a`` against
    the i-th of ``b`` of the same round)."""
    return [statistics.median(x / y for x, y in zip(ra, rb, strict=True))
            for ra, rb in zip(a, b, strict=True)]


def pooled(rounds: Sequence[Sequence[float]]) -> list[float]:
    """Every sample of every round, in one list."""
    return [value for r in rounds for value in r]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, inclusive method."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(p) - 1))]
