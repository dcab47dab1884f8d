"""``pg_trgm`` on PostgreSQL databases: the trigram similarity of fuzzy ``q`` in the database
fallback (``search_fuzziness``, ``ORMFetcher(fuzzy=True)``).

``CREATE EXTENSION IF NOT EXISTS pg_trgm`` on every PostgreSQL database this app is migrated
on; nothing elsewhere. pg_trgm is a trusted extension (PostgreSQL 13 and later): a user with
CREATE on the database may create it. When the user may not, the migration logs a warning
and goes on (fuzzy search then fails on that database until an administrator runs the
statement); see docs/search.md.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger("datapipe_django.search")


def create_pg_trgm(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        logger.warning("datapipe_django: could not create the pg_trgm extension on %r (%s); "
                       "fuzzy search needs it: run CREATE EXTENSION pg_trgm as a superuser.",
                       connection.alias, exc)


class Migration(migrations.Migration):
    dependencies = [("datapipe_django", "0001_pendingindex")]

    operations = [migrations.RunPython(create_pg_trgm, migrations.RunPython.noop,
                                       elidable=True)]
