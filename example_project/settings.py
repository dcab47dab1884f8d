"""Settings of the example project: a payouts read API served by a datapipe pipeline.

Databases. By default every alias is an SQLite file under ``example_project/var/`` (git-ignored),
so the demo needs nothing installed:

* ``default``  the application database (the primary). It keeps the last 30 days of payouts.
* ``archive``  every payout ever made (TiDB in production; any MySQL-wire database works).

``DATAPIPE_EXAMPLE_DB=real`` switches to the real servers that ``scripts/services.sh`` starts:
``default`` PostgreSQL on 127.0.0.1:5432, ``replica`` its streaming hot standby on 5433 and
``archive`` MariaDB on 3306. Only then is there a ``replica`` alias (the pipeline reads it
between the primary and the archive).

Cache. The pipeline keeps the primary's pages in the ``default`` cache (``CachedFetcher``, see
docs/caching.md): this process's memory in the demo, the real Redis on 127.0.0.1:6379 (through
django-redis) with ``DATAPIPE_EXAMPLE_DB=real``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
#: Where the SQLite files live (``DATAPIPE_EXAMPLE_VAR`` to put them elsewhere, as tests do).
VAR_DIR = Path(os.environ.get("DATAPIPE_EXAMPLE_VAR") or BASE_DIR / "var")


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


# Demo defaults: DEBUG is on (it also enables the demo's default merchant, see payouts/views.py).
# Set DJANGO_DEBUG=0 and DJANGO_SECRET_KEY for anything but a local demo.
DEBUG = _env_flag("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "datapipe-example-not-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",  # the browsable API's and Swagger UI's assets
    "django_filters",
    "rest_framework",
    "datapipe_django",
    "example_project.payouts",
    # OpenTelemetry SDK, Django request spans, Prometheus metrics at /metrics (telemetry.py).
    "example_project.telemetry.TelemetryConfig",
]

#: OpenAPI at /schema/ with Swagger UI and Redoc, when drf-spectacular is installed (the dev
#: extra installs it, and drf-spectacular-sidecar, which serves the UIs without a CDN).
OPENAPI = importlib.util.find_spec("drf_spectacular") is not None
SIDECAR = importlib.util.find_spec("drf_spectacular_sidecar") is not None
if OPENAPI:
    INSTALLED_APPS.append("drf_spectacular")
if SIDECAR:
    INSTALLED_APPS.append("drf_spectacular_sidecar")

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    },
]
STATIC_URL = "/static/"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    # A client that wrote reads from the primary for DATAPIPE["PIN_AFTER_WRITE"] seconds.
    "datapipe_django.pinning.ReadYourWritesMiddleware",
]

#: django-debug-toolbar with the datapipe panel (sources, verdicts, SQL, enrichers, timings of
#: every pipeline a request runs), with DEBUG on and the toolbar installed (the example extra).
DEBUG_TOOLBAR = DEBUG and importlib.util.find_spec("debug_toolbar") is not None \
    and _env_flag("DATAPIPE_EXAMPLE_TOOLBAR", True)
if DEBUG_TOOLBAR:
    from debug_toolbar.settings import PANELS_DEFAULTS

    INSTALLED_APPS.append("debug_toolbar")
    MIDDLEWARE.insert(0, "debug_toolbar.middleware.DebugToolbarMiddleware")
    INTERNAL_IPS = ["127.0.0.1"]
    DEBUG_TOOLBAR_PANELS = [*PANELS_DEFAULTS, "datapipe_django.debug_toolbar.DatapipePanel"]

# Writes to the primary, reads to a healthy replica (never to the archive).
DATABASE_ROUTERS = ["datapipe_django.routers.PrimaryReplicaRouter"]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_REAL_SERVERS = os.environ.get("DATAPIPE_EXAMPLE_DB", "").strip().lower() == "real"

if USE_REAL_SERVERS:
    DATABASES: dict[str, dict] = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "NAME": "datapipe",
            "USER": "postgres",
            "PASSWORD": "",
            # psycopg 3's pool: ~0.3 ms to get a connection instead of ~9 ms to open one
            # (benchmarks/connections.py); worker threads return theirs when done.
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 10}},
        },
        "replica": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5433,
            "NAME": "datapipe",
            "USER": "postgres",
            "PASSWORD": "",
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 10}},
            # A hot standby of `default`: tests read the primary's test database through it.
            "TEST": {"MIRROR": "default"},
        },
        "archive": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": "127.0.0.1",
            "PORT": 3306,
            "NAME": "datapipe_archive",
            "USER": "root",
            "PASSWORD": "",
            "OPTIONS": {"charset": "utf8mb4"},
        },
    }
else:
    VAR_DIR.mkdir(exist_ok=True)
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "primary.sqlite3"},
        "archive": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "archive.sqlite3"},
    }

# Where CachedFetcher keeps pages (payouts/pipelines.py). A write to a payout invalidates them
# (on commit). Redis is shared by every process; its short socket timeouts bound what an
# unreachable Redis costs: one failed call, then the database answers without it for
# DATAPIPE["CACHE_BREAKER_SECONDS"].
if USE_REAL_SERVERS:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25,
                        "SERIALIZER": "django_redis.serializers.json.JSONSerializer"},
        },
    }
else:
    # One process (runserver): its own memory is enough, and needs no server.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DATAPIPE = {
    "PRIMARY": "default",
    "REPLICAS": ["replica"] if "replica" in DATABASES else [],
    "ARCHIVES": ["archive"],
    "TIMEOUT": 2.0,
    "DEFAULT_LIMIT": 10,
    "MAX_LIMIT": 100,
    "MAX_EXPAND_DEPTH": 2,
    "CACHE": "default",
}

# The search engine serves ?q= when there is one: with the real servers (scripts/services.sh
# starts an Elasticsearch node on 127.0.0.1:9200), or wherever DATAPIPE_EXAMPLE_SEARCH=1. In
# the SQLite demo there is none and the databases answer q themselves.
SEARCH_URL = os.environ.get("DATAPIPE_EXAMPLE_SEARCH_URL", "http://127.0.0.1:9200")
PAYOUTS_SEARCH = (_env_flag("DATAPIPE_EXAMPLE_SEARCH", USE_REAL_SERVERS)
                  and importlib.util.find_spec("django_elasticsearch_dsl") is not None)
PAYOUTS_INDEX = os.environ.get("DATAPIPE_EXAMPLE_INDEX", "payouts")
if PAYOUTS_SEARCH:
    INSTALLED_APPS.append("django_elasticsearch_dsl")
    ELASTICSEARCH_DSL = {"default": {"hosts": SEARCH_URL, "request_timeout": 2,
                                     "max_retries": 0}}
    # Index updates when the write commits, in bulk; an engine outage never fails a write
    # (the rows are marked, `manage.py datapipe_index pending` re-indexes them).
    ELASTICSEARCH_DSL_SIGNAL_PROCESSOR = "datapipe_django.search.sync.OnCommitSignalProcessor"
    ELASTICSEARCH_DSL_AUTO_REFRESH = True

#: The ledger service `?expand[]=transaction` reads (start it with `manage.py run_ledger`).
LEDGER_URL = os.environ.get("LEDGER_URL", "http://127.0.0.1:8001")

REST_FRAMEWORK = {
    # The demo identifies the caller by headers (see payouts/views.py); a real deployment
    # authenticates and derives the merchant from the credentials.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    # JSON, and DRF's browsable API for a browser (with the FilterSet's form under "Filters").
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

# The pipeline's log lines (LoggingMiddleware, TimingMiddleware) on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"datapipe_django": {"handlers": ["console"], "level": "INFO",
                                    "propagate": False}},
}

if OPENAPI:
    REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
    SPECTACULAR_SETTINGS = {
        "TITLE": "Payouts API (datapipe-django example)",
        "DESCRIPTION": "Payouts read from the application database and the archive by a "
                       "datapipe pipeline. Callers are identified by the X-Merchant-Id and "
                       "X-Auth-Type headers.",
        "VERSION": "1.0.0",
        "SERVE_INCLUDE_SCHEMA": False,
        **({"SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR"} if SIDECAR else {}),
    }

