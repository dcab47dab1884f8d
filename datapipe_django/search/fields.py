"""Document fields the libraries do not ship: ``date_nanos`` for ``DateTimeField``.

``DateField`` of both libraries maps to the engine's ``date``, which keeps milliseconds; a
``DateTimeField`` holds microseconds, so two rows less than a millisecond apart would sort
differently (and cursor pages could skip one). Map datetimes you order or filter by as
``date_nanos``::

    from datapipe_django.search.fields import DateNanosField            # Elasticsearch
    from datapipe_django.search.fields import OpenSearchDateNanosField  # OpenSearch

    created_at = DateNanosField()

(``date_nanos`` holds 1970-01-01 to 2262-04-11.) Each class is created on first use, so this
module imports with either library installed.
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["DateNanosField", "OpenSearchDateNanosField"]  # noqa: F822 (module __getattr__)


@cache
def _elasticsearch() -> type[Any]:
    from django_elasticsearch_dsl.fields import DEDField
    from elasticsearch.dsl.field import DateNanos

    return type("DateNanosField", (DEDField, DateNanos), {"__module__": __name__})


@cache
def _opensearch() -> type[Any]:
    from django_opensearch_dsl.fields import DODField
    from opensearchpy.helpers.field import Date

    return type("OpenSearchDateNanosField", (DODField, Date),
                {"__module__": __name__, "name": "date_nanos"})


def __getattr__(name: str) -> Any:
    if name == "DateNanosField":
        return _elasticsearch()
    if name == "OpenSearchDateNanosField":
        return _opensearch()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
