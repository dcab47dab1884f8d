"""The ledger's HTTP server: the standard library's ``ThreadingHTTPServer`` on loopback.

::

    GET /v1/transactions?merchant_id=1&id=txn_a&id=txn_b
    200 {"transactions": [{"id": "txn_a", "payout_id": 12, "amount": 250000, "fee": 300,
                           "tax": 54, "currency": "INR", "status": "settled", ...}]}

Unknown ids, and ids of another merchant, are left out of the answer. More than
:data:`MAX_IDS` ids, or no ``merchant_id``, is a 400. ``GET /health`` answers 200.
:class:`LedgerServer` also lets a test or a demo add latency or take the service down.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["MAX_IDS", "LedgerServer"]

#: Most ids one request may ask for (the client's batch size must not exceed it).
MAX_IDS = 100


class LedgerServer(ThreadingHTTPServer):
    """Serves ``transactions`` (id → transaction dict, each with a ``merchant_id``).

    ``latency`` (seconds) delays every answer; ``available = False`` answers 503. ``calls``
    records the ids of every transactions request, in order.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, transactions: Iterable[Mapping[str, Any]] = (), *,
                 host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
        super().__init__((host, port), _Handler)
        self.transactions = {t["id"]: dict(t) for t in transactions}
        self.latency = latency
        self.available = True
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LedgerServer:
        """Serve on a background thread (``stop()`` ends it)."""
        self._thread = threading.Thread(target=self.serve_forever, name="ledger", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def lookup(self, merchant_id: str, ids: list[str]) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(list(ids))
        found = (self.transactions.get(i) for i in dict.fromkeys(ids))
        return [t for t in found if t is not None and str(t["merchant_id"]) == merchant_id]


class _Handler(BaseHTTPRequestHandler):
    server: LedgerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send(HTTPStatus.OK, {"status": "ok"})
            return
        if url.path != "/v1/transactions":
            self._send(HTTPStatus.NOT_FOUND, {"detail": "Not found."})
            return
        if self.server.latency:
            time.sleep(self.server.latency)
        if not self.server.available:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"detail": "The ledger is down."})
            return
        query = parse_qs(url.query)
        ids = [i for value in query.get("id", []) for i in value.split(",") if i]
        merchant = query.get("merchant_id", [""])[-1]
        if not merchant:
            self._send(HTTPStatus.BAD_REQUEST, {"merchant_id": ["This parameter is required."]})
        elif len(ids) > MAX_IDS:
            self._send(HTTPStatus.BAD_REQUEST, {"id": [f"At most {MAX_IDS} ids per request."]})
        else:
            self._send(HTTPStatus.OK, {"transactions": self.server.lookup(merchant, ids)})

    def _send(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the demo's terminal belongs to runserver
