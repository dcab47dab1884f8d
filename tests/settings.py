"""Settings for the test suite.

Database aliases:

* ``default``  SQLite (in memory): no server needed.
* ``primary``  the real PostgreSQL primary on 127.0.0.1:5432.
* ``replica``  the real PostgreSQL streaming hot standby on 127.0.0.1:5433.
* ``pooled``   the primary again, through psycopg 3's connection pool.
* ``archive``  the real MariaDB (MySQL wire protocol) on 127.0.0.1:3306.
* ``archive_replica``  the real MariaDB replica of it (GTID replication) on 127.0.0.1:3307.
* ``down``     PostgreSQL on a closed port: a source that is always unavailable.
* ``archive_down``  MariaDB's engine (MySQL wire) on a closed port: the same for the archive.

Cache aliases: ``default`` (local memory) and ``redis``, the real Redis on 127.0.0.1:6379.

Search: the real Elasticsearch node on 127.0.0.1:9200 (``scripts/search-node.sh``) for
django-elasticsearch-dsl Documents, and the real OpenSearch node on 127.0.0.1:9201
(``scripts/opensearch-node.sh``) for django-opensearch-dsl Documents.

A server that is not reachable outside CI is left out (database or cache alias), and the tests
that need it skip with a message saying how to start it (see ``tests/conftest.py``). In CI
every alias is kept.
"""

from __future__ import annotations

import importlib.util
import os

from tests.services import AVAILABLE, SERVICES

# Lets two test runs share the servers without sharing test databases.
SUFFIX = os.environ.get("DATAPIPE_TEST_DB_SUFFIX", "")

SECRET_KEY = "datapipe-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_filters",
    "rest_framework",
    "drf_spectacular",  # the OpenAPI extension of PipelineViewSet is tested
    "datapipe_django",
    "tests.testapp",
    # The example project's payouts app: its pipeline and ledger (test_example_ledger.py).
    "example_project.payouts",
]

# The datapipe debug-toolbar panel, tested with django-debug-toolbar's own toolbar objects
# (tests/test_debug_toolbar.py); the toolbar is shown only where a test turns it on.
INSTALLED_APPS.append("debug_toolbar")
DEBUG_TOOLBAR_PANELS = ["debug_toolbar.panels.timer.TimerPanel",
                        "debug_toolbar.panels.sql.SQLPanel",
                        "datapipe_django.debug_toolbar.DatapipePanel"]
DEBUG_TOOLBAR_CONFIG = {"IS_RUNNING_TESTS": False}
SILENCED_SYSTEM_CHECKS = ["debug_toolbar.W001"]  # no middleware: the tests build the toolbar

# DRF's browsable API renders pipeline endpoints (tested).
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request"]}}]
STATIC_URL = "/static/"

MIDDLEWARE: list[str] = []

DATABASES: dict[str, dict] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}

if "postgres" in AVAILABLE:
    DATABASES["primary"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": SERVICES["postgres"][0],
        "PORT": SERVICES["postgres"][1],
        "NAME": "datapipe",
        "USER": "postgres",
        "PASSWORD": "",
        "TEST": {"NAME": f"test_datapipe{SUFFIX}"},
    }

if "postgres" in AVAILABLE and "replica" in AVAILABLE:
    # The real hot standby of the primary. As a test mirror it reads the primary's test
    # database through streaming replication (tests that read it commit their writes).
    DATABASES["replica"] = {
        **DATABASES["primary"],
        "PORT": SERVICES["replica"][1],
        "TEST": {"MIRROR": "primary"},
    }

if "postgres" in AVAILABLE:
    # The primary again, through psycopg 3's pool (as the example project and a production
    # deployment read it): the pool's own waits must be bounded too (tests/test_stores.py).
    DATABASES["pooled"] = {
        **DATABASES["primary"],
        "OPTIONS": {"pool": {"min_size": 1, "max_size": 4}},
        "TEST": {"MIRROR": "primary"},
    }

if "mariadb" in AVAILABLE:
    DATABASES["archive"] = {
        "ENGINE": "django.db.backends.mysql",
        "HOST": SERVICES["mariadb"][0],
        "PORT": SERVICES["mariadb"][1],
        "NAME": "datapipe_archive",
        "USER": "root",
        "PASSWORD": "",
        # A binary collation makes `exact`/`contains` case-sensitive, as on PostgreSQL.
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": f"test_datapipe_archive{SUFFIX}", "CHARSET": "utf8mb4",
                 "COLLATION": "utf8mb4_bin"},
    }

if "mariadb" in AVAILABLE and "mariadb_replica" in AVAILABLE:
    # The real replica of the archive server. As a test mirror it reads the archive's test
    # database through replication (tests that read it commit their writes).
    DATABASES["archive_replica"] = {
        **DATABASES["archive"],
        "PORT": SERVICES["mariadb_replica"][1],
        "TEST": {"MIRROR": "archive"},
    }

# A source that is always down: PostgreSQL on a closed port. A test mirror, so the test
# runner never tries to create it; connecting fails with a real OperationalError.
DATABASES["down"] = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": "127.0.0.1",
    "PORT": 9,
    "NAME": "nowhere",
    "USER": "postgres",
    "OPTIONS": {"connect_timeout": 2},
    "TEST": {"MIRROR": "default"},
}

if "mariadb" in AVAILABLE:
    # The archive's engine on a closed port (MySQL wire): an archive that is always down.
    DATABASES["archive_down"] = {
        **DATABASES["archive"],
        "PORT": 9,
        "OPTIONS": {"charset": "utf8mb4", "connect_timeout": 2},
        "TEST": {"MIRROR": "default"},
    }

# Caches. ``default``: local memory, no server needed. ``redis``: the real Redis through
# django-redis (database 3; keys prefixed per DATAPIPE_TEST_DB_SUFFIX), with short socket
# timeouts so that a Redis outage costs the tests milliseconds, not seconds.
CACHES: dict[str, dict] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

if "redis" in AVAILABLE:
    CACHES["redis"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{SERVICES['redis'][0]}:{SERVICES['redis'][1]}/3",
        "KEY_PREFIX": f"datapipe-tests{SUFFIX}",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25,
                    "SERIALIZER": "django_redis.serializers.json.JSONSerializer"},
    }

# The search engines: django-elasticsearch-dsl talks to the Elasticsearch node of
# scripts/search-node.sh (127.0.0.1:9200), django-opensearch-dsl to the OpenSearch node of
# scripts/opensearch-node.sh (127.0.0.1:9201). Index names carry a per-run prefix
# (tests/search_documents.py). The on-commit index sync is the signal processor, switched on
# (AUTOSYNC) by its own tests only.
SEARCH_URL = f"http://{SERVICES['search'][0]}:{SERVICES['search'][1]}"
OPENSEARCH_URL = f"http://{SERVICES['opensearch'][0]}:{SERVICES['opensearch'][1]}"
for _app in ("django_elasticsearch_dsl", "django_opensearch_dsl"):
    if importlib.util.find_spec(_app) is not None:
        INSTALLED_APPS.append(_app)
ELASTICSEARCH_DSL = {"default": {"hosts": SEARCH_URL, "request_timeout": 10, "max_retries": 0}}
ELASTICSEARCH_DSL_SIGNAL_PROCESSOR = "datapipe_django.search.sync.OnCommitSignalProcessor"
ELASTICSEARCH_DSL_AUTOSYNC = False
ELASTICSEARCH_DSL_AUTO_REFRESH = True
OPENSEARCH_DSL = {"default": {"hosts": [OPENSEARCH_URL], "timeout": 10, "max_retries": 0}}
OPENSEARCH_DSL_SIGNAL_PROCESSOR = "datapipe_django.search.sync.OnCommitSignalProcessor"
OPENSEARCH_DSL_AUTOSYNC = False
OPENSEARCH_DSL_AUTO_REFRESH = True

REST_FRAMEWORK: dict[str, object] = {
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

DATAPIPE = {
    "PRIMARY": "default",
    "TIMEOUT": 5.0,
}

# The REST tests' pipeline ("test-items", tests/testapp/pipelines.py) keeps a method= filter
# without a spec on purpose: the sources' declining of it is tested. tests/test_checks.py
# checks E015 itself.
SILENCED_SYSTEM_CHECKS += ["datapipe_django.E015"]
