"""Shared fixtures. Real servers: see tests/services.py for how missing ones are handled."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.services import AVAILABLE, IN_CI, START_HINT

OPENSEARCH_HINT = ("start it with `bash scripts/services.sh start-opensearch` (or every server "
                   "with `bash scripts/services.sh start`)")

#: Every alias the ORM tests run against, each a different engine.
ENGINE_ALIASES = ("default", "primary", "archive")


def require_alias(alias: str) -> None:
    """Skip (outside CI only) when the server behind ``alias`` is not running."""
    if alias not in settings.DATABASES and not IN_CI:
        pytest.skip(f"database alias {alias!r} has no server: {START_HINT}")  # not in CI


def require_cache(alias: str) -> None:
    """Skip (outside CI only) when the server behind cache ``alias`` is not running."""
    if alias not in settings.CACHES and not IN_CI:
        pytest.skip(f"cache alias {alias!r} has no server: {START_HINT}")  # not in CI


def require_search() -> None:
    """Skip (outside CI only) when the search engine node is not running."""
    if "search" not in AVAILABLE and not IN_CI:
        pytest.skip(f"the search engine node is not running: {START_HINT}")  # not in CI


def require_opensearch() -> None:
    """Skip (outside CI only) when the OpenSearch node is not running."""
    if "opensearch" not in AVAILABLE and not IN_CI:
        pytest.skip(f"the OpenSearch node is not running: {OPENSEARCH_HINT}")  # not in CI


def engine_databases() -> list[str]:
    """The engine aliases configured here, for ``django_db(databases=...)``."""
    return [alias for alias in ENGINE_ALIASES if alias in settings.DATABASES]


@pytest.fixture
def down_alias(django_db_blocker):
    """The ``down`` alias (PostgreSQL on a closed port), with database access unblocked."""
    with django_db_blocker.unblock():
        yield "down"


@pytest.fixture(params=ENGINE_ALIASES)
def engine_alias(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over SQLite, PostgreSQL and MariaDB (see ``engine_databases``)."""
    require_alias(request.param)
    return request.param


@pytest.fixture(autouse=True)
def _fresh_breakers():
    """Every test starts with every breaker closed: the enricher breakers of the registered
    (module-level) pipelines and the database stores' (process-wide state a test's outage
    must not leave to the next test)."""
    yield
    from datapipe_django import stores
    from datapipe_django.registry import all_pipelines

    for pipeline in all_pipelines():
        for enricher in pipeline.enrichers:
            breaker = getattr(enricher, "breaker", None)
            if breaker is not None:
                breaker.reset()
    for guard in list(stores._guards.values()):
        guard.close()
