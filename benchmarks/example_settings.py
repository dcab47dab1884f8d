"""The example project on the real servers, in databases of its own (``benchmarks/tiers.py``).

``example_project.settings`` with ``DATAPIPE_EXAMPLE_DB=real`` (PostgreSQL primary, its hot
standby, MariaDB archive, Redis), without the search engine, reading and writing
``datapipe_bench_tiers`` (PostgreSQL, replicated to the standby) and
``datapipe_bench_tiers_archive`` (MariaDB), its pages cached in Redis database 7: a benchmark
never touches the demo's own data.
"""

from __future__ import annotations

import os

os.environ["DATAPIPE_EXAMPLE_DB"] = "real"
os.environ.setdefault("DATAPIPE_EXAMPLE_SEARCH", "0")

from example_project.settings import *  # noqa: F403
from example_project.settings import CACHES, DATABASES

PG_NAME = "datapipe_bench_tiers"
ARCHIVE_NAME = "datapipe_bench_tiers_archive"

DEBUG = False
DATABASES["default"]["NAME"] = PG_NAME
DATABASES["replica"]["NAME"] = PG_NAME
DATABASES["archive"]["NAME"] = ARCHIVE_NAME
CACHES["default"]["LOCATION"] = "redis://127.0.0.1:6379/7"
PAYOUTS_SEARCH = False
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "root": {"handlers": [], "level": "WARNING"}}
