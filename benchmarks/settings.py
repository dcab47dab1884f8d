"""Settings for the benchmarks: one PostgreSQL alias, no middleware, no authentication."""

from __future__ import annotations

import os

SECRET_KEY = "datapipe-benchmarks-not-secret"
DEBUG = False  # DEBUG=True would record every query and skew both sides
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchmarks.views"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_filters",
    "rest_framework",
    "datapipe_django",
    "tests.testapp",  # the Item model, ItemFilterSet and ItemSerializer
]
MIDDLEWARE: list[str] = []

PG_HOST = os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DATAPIPE_PG_PORT", "5432"))
PG_NAME = "datapipe_bench"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": PG_HOST,
        "PORT": PG_PORT,
        "NAME": PG_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "CONN_MAX_AGE": None,  # one persistent connection, as a real worker keeps
    },
}

REST_FRAMEWORK = {
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

# DATAPIPE_BENCH_TIMEOUT=none measures without a deadline (so without statement timeouts).
_timeout = os.environ.get("DATAPIPE_BENCH_TIMEOUT", "5")
DATAPIPE = {"PRIMARY": "default", "MAX_LIMIT": 100,
            "TIMEOUT": None if _timeout.lower() == "none" else float(_timeout)}
