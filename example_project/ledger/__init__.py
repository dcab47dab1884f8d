"""A small ledger service, and the client the payouts pipeline calls it with.

The ledger keeps the money movements behind payouts (amount, fees, tax, settlement) outside
the payouts database, as a separate service would: ``GET /v1/transactions?merchant_id=1&id=
txn_a&id=txn_b`` answers the transactions of that merchant among the ids asked for (at most
:data:`~example_project.ledger.server.MAX_IDS` per call). ``manage.py run_ledger`` serves it;
:class:`~example_project.ledger.client.LedgerClient` calls it in batches for
``BatchEnricher("transaction", ...)``.
"""
