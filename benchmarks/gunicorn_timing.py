"""A gunicorn config module that records, per request, where its time went on the server.

    gunicorn --config python:benchmarks.gunicorn_timing ...   (benchmarks/faults.py does)

For each request carrying ``X-Bench-Request: <id>`` a worker appends one line to
``$DATAPIPE_BENCH_TIMING_DIR/<pid>.tsv``: the id, then in milliseconds the time the request
waited for a thread (from the moment its connection was handed to the thread pool: gthread
workers only, else 0), the time from a thread taking it to the response written, and the two
together (what the server owes the request: arrival to the last byte sent). A load client
compares that with what it measured itself: the difference is the client's own delay (its
threads waiting for the GIL or a CPU) and the loopback.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

_local = threading.local()


def _directory() -> Path | None:
    value = os.environ.get("DATAPIPE_BENCH_TIMING_DIR")
    return Path(value) if value else None


def post_fork(server: Any, worker: Any) -> None:
    """Stamp each connection when the worker hands it to its thread pool (gthread)."""
    enqueue = getattr(worker, "enqueue_req", None)
    handle = getattr(worker, "handle_request", None)
    if enqueue is None or handle is None:
        return

    def enqueue_req(conn: Any) -> Any:
        conn.datapipe_enqueued = time.monotonic()
        return enqueue(conn)

    def handle_request(req: Any, conn: Any) -> Any:
        _local.enqueued = getattr(conn, "datapipe_enqueued", None)
        return handle(req, conn)

    worker.enqueue_req = enqueue_req
    worker.handle_request = handle_request
    directory = _directory()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        worker.datapipe_timing = (directory / f"{os.getpid()}.tsv").open("a", buffering=1)


def pre_request(worker: Any, req: Any) -> None:
    _local.started = time.monotonic()


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    out = getattr(worker, "datapipe_timing", None)
    ident = environ.get("HTTP_X_BENCH_REQUEST")
    if out is None or not ident:
        return
    now = time.monotonic()
    started = getattr(_local, "started", now)
    enqueued = getattr(_local, "enqueued", None) or started
    _local.enqueued = None
    queued, handled = max(0.0, started - enqueued), now - started
    out.write(f"{ident}\t{queued * 1e3:.2f}\t{handled * 1e3:.2f}\t{(queued + handled) * 1e3:.2f}\n")
