"""Which real servers the test suite can reach (probed once, by TCP connect, at import).

Outside CI a missing server turns into skips that say how to start it; with ``CI=true`` the
aliases stay configured, so a test that needs a missing server fails loudly instead.
"""

from __future__ import annotations

import os
import socket

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_HINT = "start the real servers with `bash scripts/services.sh start`"

SERVICES = {
    "postgres": ("127.0.0.1", int(os.environ.get("DATAPIPE_PG_PORT", "5432"))),
    "replica": ("127.0.0.1", int(os.environ.get("DATAPIPE_REPLICA_PORT", "5433"))),
    "mariadb": ("127.0.0.1", int(os.environ.get("DATAPIPE_MYSQL_PORT", "3306"))),
    # A second MariaDB replicating the first (GTID), as a MySQL/TiDB read replica would.
    "mariadb_replica": ("127.0.0.1", int(os.environ.get("DATAPIPE_MYSQL_REPLICA_PORT", "3307"))),
    "redis": ("127.0.0.1", int(os.environ.get("DATAPIPE_REDIS_PORT", "6379"))),
    # The search engine node of scripts/search-node.sh (Elasticsearch, HTTP).
    "search": ("127.0.0.1", int(os.environ.get("DATAPIPE_SEARCH_PORT", "9200"))),
    # The OpenSearch node of scripts/opensearch-node.sh (HTTP), for django-opensearch-dsl.
    "opensearch": ("127.0.0.1", int(os.environ.get("DATAPIPE_OPENSEARCH_PORT", "9201"))),
}


def reachable(name: str, timeout: float = 0.3) -> bool:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


AVAILABLE = {name for name in SERVICES if IN_CI or reachable(name)}
