"""``manage.py run_ledger``: serve the example ledger on 127.0.0.1.

The ledger's book is built at start from the payouts of one database alias (the archive by
default: it holds every payout), one transaction per ``transaction_id``. The payouts API calls
it for ``?expand[]=transaction`` at ``settings.LEDGER_URL`` (default http://127.0.0.1:8001).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from datapipe_django.conf import datapipe_settings
from example_project.ledger.book import transaction_for
from example_project.ledger.client import DEFAULT_URL
from example_project.ledger.server import LedgerServer
from example_project.payouts.models import Payout


class Command(BaseCommand):
    help = "Serve the example ledger service on 127.0.0.1 (Ctrl-C stops it)."

    def add_arguments(self, parser: CommandParser) -> None:
        default_port = urlsplit(getattr(settings, "LEDGER_URL", DEFAULT_URL)).port or 8001
        parser.add_argument("--port", type=int, default=default_port,
                            help=f"TCP port on 127.0.0.1 (default {default_port}).")
        parser.add_argument("--database", default=None,
                            help="Alias to read the payouts from (default: the first of "
                                 "DATAPIPE['ARCHIVES'], else 'default').")
        parser.add_argument("--latency-ms", type=float, default=0.0,
                            help="Delay every answer, to watch the pipeline's deadline work.")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"] or next(iter(datapipe_settings.ARCHIVES), "default")
        if alias not in connections.settings:
            raise CommandError(f"Unknown database alias {alias!r}.")
        book = [transaction_for(p) for p in
                Payout.objects.using(alias).exclude(transaction_id=None).iterator()]
        try:
            server = LedgerServer(book, port=options["port"],
                                  latency=options["latency_ms"] / 1000)
        except OSError as exc:
            raise CommandError(f"Cannot listen on 127.0.0.1:{options['port']}: {exc}") from exc
        self.stdout.write(f"Ledger: {len(book)} transactions from {alias!r}, serving on "
                          f"{server.url} (Ctrl-C stops).")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
