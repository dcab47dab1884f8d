"""`PrimaryReplicaRouter`: writes to the primary, reads to one healthy replica.

::

    DATABASE_ROUTERS = ["datapipe_django.routers.PrimaryReplicaRouter"]
    DATAPIPE = {"PRIMARY": "default", "REPLICAS": ["replica"], "ARCHIVES": ["archive"]}

* Writes go to ``PRIMARY``.
* Reads go to a healthy replica (lag within ``REPLICA_MAX_LAG``, reachable), the same one
  for the whole request when :class:`~datapipe_django.pinning.ReadYourWritesMiddleware` is
  installed (it opens a request scope), so a page never mixes two replicas. Reads go to the
  primary instead when no replica is healthy, when the client is pinned (read-your-writes,
  :func:`~datapipe_django.pinning.use_primary`), or inside an open transaction on the
  primary.
* Archives are never chosen: they are reached only through pipelines
  (``ORMFetcher(using="archive")``).
* ``allow_migrate``: not on replicas (they receive the schema by replication); everywhere
  else, including archives, Django's default.
* ``allow_relation``: between rows of the primary and its replicas.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from datapipe_django.conf import datapipe_settings
from datapipe_django.pinning import current_scope, is_pinned
from datapipe_django.replicas import healthy_replicas

__all__ = ["PrimaryReplicaRouter"]

class PrimaryReplicaRouter:
    """A database router for a primary, its read replicas and archives (see module doc)."""

    def _primary(self) -> str:
        return str(datapipe_settings.PRIMARY)

    def _group(self) -> set[str]:
        return {self._primary(), *datapipe_settings.REPLICAS}

    def db_for_read(self, model: Any, **hints: Any) -> str:
        primary = self._primary()
        if is_pinned() or connections[primary].in_atomic_block:
            return primary
        scope = current_scope()
        if scope is not None and "replica" in scope:
            chosen = scope["replica"]
            if chosen in healthy_replicas():
                return chosen
        replicas = healthy_replicas()
        chosen = replicas[0] if replicas else primary
        if scope is not None:
            scope["replica"] = chosen
        return chosen

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return self._primary()

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        group = self._group()
        if obj1._state.db in group and obj2._state.db in group:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None,
                      **hints: Any) -> bool | None:
        if db in datapipe_settings.REPLICAS:
            return False
        return None
