"""Faults under load: the example project over gunicorn on the real servers, one store failing
at a time, every response checked against ground truth.

::

    bash scripts/services.sh start
    python benchmarks/faults.py                  # every fault, ~4 minutes
    python benchmarks/faults.py --faults primary,redis --fault-seconds 6

What it does (everything on 127.0.0.1, every loop bounded in requests and seconds):

1. seeds the example databases (``manage.py seed_demo --payouts 20000``) unless they hold
   that many payouts already, and reads the ground truth from the archive (it holds every
   payout) into memory: payouts, users, fund accounts, contacts, ledger transactions;
2. starts the ledger (``manage.py run_ledger``) and gunicorn (``example_project.wsgi``,
   2 gthread workers x 4 threads, ``DATAPIPE_EXAMPLE_DB=real``, DEBUG off);
3. runs a closed-loop load client (``--concurrency`` threads, as many as gunicorn has
   threads; keep-alive connections): list
   pages (newest first, by status, by amount, offset pages, ``q`` search), retrieves,
   expansions (user, fund account and contact for private callers, the ledger transaction),
   for three merchants. A writer thread inserts payouts for merchant 3 (primary, then the
   archive, as an archival copy would) while the primary and the archive are up;
4. for each fault: measures a healthy baseline (``--baseline-seconds``), injects the fault
   (``scripts/services.sh``, SIGSTOP for the ledger, ``pg_wal_replay_pause()`` on the
   standby), loads for ``--fault-seconds``, restores it, loads for ``--recovery-seconds``;
5. restores everything on the way out, whatever happened (``finally``, SIGINT/SIGTERM), and
   prints one table.

A response is checked whole: status, body shape, every row's fields against the truth, the
order, the page's completeness, every expansion. ``flagged`` rows are wrong rows on a page
that says it may lack rows (``X-Datapipe-Unavailable`` or ``"partial": true``); ``unflagged``
ones are plain wrong answers. A missing expansion is fine only when the body's ``errors``
names it. A designed 5xx is a 503 with ``Retry-After`` and a ``code``, or a 504 with one; any
other 5xx (or a dropped connection) is undesigned. ``recover`` is the time from the end of the
restore until the last response that was not healthy (a non-200, a flag, an enrichment error
or a wrong row), sent during the recovery phase.

While it runs, ``/tmp/datapipe-FAULT-RUN-IN-PROGRESS`` exists (other test runs sharing the
servers then know why a server is down).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services.sh"
FLAG = Path("/tmp/datapipe-FAULT-RUN-IN-PROGRESS")
#: Where gunicorn's workers write each request's server-side times (benchmarks/gunicorn_timing.py)
TIMING = Path(f"/tmp/datapipe-faults-timing-{os.getpid()}")
HOST = "127.0.0.1"
DEADLINE = 2.0  # the example pipeline's timeout
MERCHANTS = (1, 2, 3)
WRITER_MERCHANT = 3
ALL_FAULTS = ("primary", "standby", "replay-paused", "archive", "search", "redis",
              "ledger-frozen")


# -- servers -----------------------------------------------------------------------------------

def services(command: str) -> None:
    subprocess.run(["bash", str(SERVICES), command], check=True, capture_output=True,
                   timeout=180)


def wait_http(port: int, path: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", path, headers={"X-Merchant-Id": "1"})
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answers on {HOST}:{port}{path} after {seconds}s")


def wait_search_ready(seconds: float = 60.0) -> None:
    """Until the search node's ``payouts`` index is at least yellow."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection(HOST, 9200, timeout=5)
            conn.request("GET", "/_cluster/health/payouts?wait_for_status=yellow&timeout=5s")
            health = json.loads(conn.getresponse().read())
            if health.get("status") in ("yellow", "green"):
                return
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.2)


def standby_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(host=HOST, port=5433, user="postgres", dbname="postgres",
                         autocommit=True, connect_timeout=3) as conn:
        conn.execute(statement)


class Servers:
    """The ledger and gunicorn (their own process groups), and every fault's restore."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = {**os.environ, "DATAPIPE_EXAMPLE_DB": "real", "DJANGO_DEBUG": "0",
                    "DJANGO_SETTINGS_MODULE": "example_project.settings",
                    "LEDGER_URL": f"http://{HOST}:{args.ledger_port}",
                    "PYTHONPATH": str(ROOT),
                    "DATAPIPE_BENCH_TIMING_DIR": str(TIMING)}
        self.ledger: subprocess.Popen[bytes] | None = None
        self.gunicorn: subprocess.Popen[bytes] | None = None
        self.restores: dict[str, Any] = {}

    def start(self) -> None:
        log = open(self.args.log, "ab")  # noqa: SIM115 - the children keep it
        self.ledger = subprocess.Popen(
            [sys.executable, "manage.py", "run_ledger", "--port", str(self.args.ledger_port)],
            cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "example_project.wsgi",
             "--bind", f"{HOST}:{self.args.port}", "--workers", "2",
             "--worker-class", "gthread", "--threads", "4", "--timeout", "30",
             "--keep-alive", "30", "--log-level", "warning",
             "--config", "python:benchmarks.gunicorn_timing"],
            cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
        wait_http(self.args.ledger_port, "/v1/transactions?merchant_id=1", 60)
        wait_http(self.args.port, "/v1/payouts?limit=1", 60)

    def stop(self) -> None:
        for proc in (self.gunicorn, self.ledger):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen ledger cannot die otherwise
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # Each fault: (inject, restore). Restores are idempotent.
    def inject(self, fault: str) -> None:
        if fault == "primary":
            self.restores[fault] = lambda: (services("start-postgres"),
                                            services("start-replica"))
            services("stop-postgres")
        elif fault == "standby":
            self.restores[fault] = lambda: services("start-replica")
            services("stop-replica")
        elif fault == "replay-paused":
            self.restores[fault] = lambda: standby_sql("SELECT pg_wal_replay_resume()")
            standby_sql("SELECT pg_wal_replay_pause()")
        elif fault == "archive":
            self.restores[fault] = lambda: (services("start-mariadb"),
                                            services("start-mariadb-replica"))
            services("stop-mariadb")
        elif fault == "search":
            # Back when it answers searches again: the node up and the index's shards
            # allocated (the engine answers 503 to searches until then).
            self.restores[fault] = lambda: (services("start-search"), wait_search_ready())
            services("stop-search")
        elif fault == "redis":
            self.restores[fault] = lambda: services("start-redis")
            services("stop-redis")
        elif fault == "ledger-frozen":
            assert self.ledger is not None
            pid = self.ledger.pid
            self.restores[fault] = lambda: os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGSTOP)
        else:
            raise SystemExit(f"unknown fault {fault!r}; known: {', '.join(ALL_FAULTS)}")

    def restore(self, fault: str) -> None:
        action = self.restores.pop(fault, None)
        if action is not None:
            action()

    def restore_all(self) -> None:
        for fault in list(self.restores):
            try:
                self.restore(fault)
            except Exception as exc:  # keep restoring the others
                print(f"restoring {fault} failed: {exc}", file=sys.stderr)


# -- ground truth ------------------------------------------------------------------------------

@dataclass
class Row:
    id: int
    merchant_id: int
    user_id: int
    fund_account_id: int
    amount: int
    status: str
    created_at: str  # as the API renders it
    created: dt.datetime
    transaction_id: str | None
    text: str  # narration, reference_id, purpose (lower case), for q
    mode: str
    currency: str
    processed_at: dt.datetime | None


@dataclass
class Truth:
    rows: dict[int, Row] = field(default_factory=dict)
    by_merchant: dict[int, list[Row]] = field(default_factory=dict)  # newest first
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    fund_accounts: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)
    # Writer rows: (started, committed or None, Row), in write order.
    written: list[tuple[float, float | None, Row]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def api_datetime(value: dt.datetime | None) -> str | None:
    from rest_framework.fields import DateTimeField

    return None if value is None else DateTimeField().to_representation(value)


def to_row(p: Any) -> Row:
    return Row(p.id, p.merchant_id, p.user_id, p.fund_account_id, p.amount, p.status,
               api_datetime(p.created_at) or "", p.created_at, p.transaction_id,
               " ".join([p.narration, p.reference_id, p.purpose]).lower(), p.mode, p.currency,
               p.processed_at)


def load_truth() -> Truth:
    from example_project.payouts.models import Contact, FundAccount, MerchantUser, Payout

    truth = Truth()
    for p in Payout.objects.using("archive").order_by("-created_at", "-id").iterator():
        row = to_row(p)
        truth.rows[row.id] = row
        truth.by_merchant.setdefault(row.merchant_id, []).append(row)
    truth.users = {u.id: {"id": u.id, "name": u.name, "email": u.email}
                   for u in MerchantUser.objects.using("archive")}
    truth.contacts = {c.id: {"id": c.id, "name": c.name, "email": c.email, "type": c.type}
                      for c in Contact.objects.using("archive")}
    truth.fund_accounts = {f.id: {"id": f.id, "account_type": f.account_type,
                                  "details": f.details, "contact": f.contact_id}
                           for f in FundAccount.objects.using("archive")}
    words = Counter(w for r in truth.rows.values() for w in r.text.split() if w.isalpha()
                    and len(w) > 3)
    truth.words = [w for w, n in words.most_common(40) if n < 4000][:12]
    return truth


class Writer(threading.Thread):
    """Inserts a payout for :data:`WRITER_MERCHANT` every ``interval`` seconds (primary, then
    the archive) while ``enabled`` is set; records when each write started and committed."""

    def __init__(self, truth: Truth, interval: float, stop: threading.Event) -> None:
        super().__init__(name="writer", daemon=True)
        self.truth, self.interval, self.stop_event = truth, interval, stop
        self.enabled = threading.Event()
        self.idle = threading.Event()  # no write under way
        self.idle.set()
        self.failures = 0

    def pause(self) -> None:
        """Stop writing, and wait for the write under way (if any) to end."""
        self.enabled.clear()
        self.idle.wait(10)

    def run(self) -> None:
        from django.db import connections, transaction

        from example_project.payouts.models import Payout

        template = self.truth.by_merchant[WRITER_MERCHANT][0]
        next_id = max(self.truth.rows) + 1_000_000
        while not self.stop_event.wait(self.interval):
            self.idle.clear()  # before looking at `enabled`: pause() then waits for this write
            if not self.enabled.is_set():
                self.idle.set()
                continue
            now = dt.datetime.now(dt.UTC)
            payout = Payout(id=next_id, merchant_id=WRITER_MERCHANT, user_id=template.user_id,
                            fund_account_id=template.fund_account_id, amount=1000 + next_id % 997,
                            currency="INR", status="processing", mode="IMPS",
                            purpose="payout", reference_id=f"fault-{next_id}",
                            narration="fault run writer", created_at=now)
            row = to_row(payout)
            entry = [time.monotonic(), None, row]
            with self.truth.lock:
                self.truth.written.append(entry)  # type: ignore[arg-type]
            try:
                # Both or neither: the archive's transaction commits first, then the primary's
                # (which also invalidates the cached pages), so no row is ever visible that
                # one store lacks, unless the primary fails in between (then undone).
                with transaction.atomic(using="default"), transaction.atomic(using="archive"):
                    payout.save(using="default", force_insert=True)
                    payout.save(using="archive", force_insert=True)
            except Exception:
                self.failures += 1
                with contextlib.suppress(Exception):
                    Payout.objects.using("archive").filter(pk=next_id).delete()
                for alias in ("default", "archive"):
                    connections[alias].close()
                with self.truth.lock:
                    self.truth.written.remove(entry)  # type: ignore[arg-type]
                next_id += 1
                continue
            finally:
                self.idle.set()
            entry[1] = time.monotonic()
            next_id += 1

    @staticmethod
    def cleanup() -> None:
        from datapipe_django import invalidate
        from example_project.payouts.models import Payout

        for alias in ("default", "archive"):
            with contextlib.suppress(Exception):
                Payout.objects.using(alias).filter(reference_id__startswith="fault-").delete()
        with contextlib.suppress(Exception):
            invalidate(Payout)


# -- the load ----------------------------------------------------------------------------------

@dataclass
class Query:
    kind: str  # list | retrieve | search
    merchant: int
    params: list[tuple[str, str]]
    auth: str = "public"
    order: str = "newest"  # newest | amount
    status: str | None = None
    offset: int = 0
    limit: int = 10
    pk: int | None = None
    word: str | None = None
    expand: tuple[str, ...] = ()

    def path(self) -> str:
        from urllib.parse import urlencode

        base = "/v1/payouts" if self.pk is None else f"/v1/payouts/{self.pk}"
        return base + ("?" + urlencode(self.params) if self.params else "")


def make_query(rng: random.Random, truth: Truth) -> Query:
    merchant = rng.choice(MERCHANTS)
    roll = rng.random()
    expand: tuple[str, ...] = ()
    auth = "public"
    if rng.random() < 0.5:
        expand = rng.choice([("user",), ("transaction",), ("user", "transaction"),
                             ("fund_account", "fund_account.contact")])
        if "fund_account" in expand:
            auth = "private"
    params: list[tuple[str, str]] = [("expand[]", e) for e in expand]
    if roll < 0.45:
        q = Query("list", merchant, [*params, ("limit", "10")], auth, expand=expand)
    elif roll < 0.55:
        q = Query("list", merchant, [*params, ("limit", "10"), ("status", "processed")], auth,
                  status="processed", expand=expand)
    elif roll < 0.62:
        q = Query("list", merchant, [*params, ("limit", "10"), ("ordering", "-amount")], auth,
                  order="amount", expand=expand)
    elif roll < 0.70:
        offset = rng.choice([10, 40, 200, 1500])
        q = Query("list", merchant, [*params, ("limit", "10"), ("offset", str(offset))], auth,
                  offset=offset, expand=expand)
    elif roll < 0.80:
        word = rng.choice(truth.words)
        q = Query("search", merchant, [("q", word), ("limit", "10")], word=word)
    else:
        rows = truth.by_merchant[merchant]
        row = rows[min(len(rows) - 1, int(rng.expovariate(1 / 800)))]
        q = Query("retrieve", merchant, params, auth, pk=row.id, expand=expand)
    return q


@dataclass
class Outcome:
    sent: float
    seconds: float
    status: int  # 0: no HTTP answer
    designed: bool  # a non-5xx, or a designed 503/504
    wrong: int = 0
    foreign: int = 0
    flagged: bool = False
    enrich_errors: bool = False  # the body lists a failed enricher
    degraded: bool = False  # anything but a complete, correct 200
    what: str = ""  # the request and, for a wrong answer, what was wrong
    unavailable: str = ""  # X-Datapipe-Unavailable
    ident: int = 0  # its X-Bench-Request header: joins it to the server's own times
    #: The server's times (ms): waiting for a thread, then handling it to the last byte sent
    queued: float | None = None
    served: float | None = None


def expected_rows(q: Query, truth: Truth, sent: float, received: float) -> list[list[Row]]:
    """Every answer ``q`` may correctly have: one per snapshot of the writer's rows between
    ``sent`` (committed before) and ``received`` (started before)."""
    static = [r for r in truth.by_merchant[q.merchant] if q.status in (None, r.status)]
    with truth.lock:
        written = [(s, c, r) for s, c, r in truth.written
                   if r.merchant_id == q.merchant and q.status in (None, r.status)]
    must = [r for s, c, r in written if c is not None and c <= sent]
    may = [r for s, c, r in written if s <= received and not (c is not None and c <= sent)]
    answers = []
    for k in range(len(may) + 1):
        rows = static + must + may[:k]
        if q.order == "amount":
            rows.sort(key=lambda r: (-r.amount, -r.id))
        else:
            rows.sort(key=lambda r: (r.created, r.id), reverse=True)
        answers.append(rows[q.offset:q.offset + q.limit])
    return answers


def check_item(item: dict[str, Any], q: Query, truth: Truth, errors: set[str]) -> bool:
    """Whether one rendered payout is right (fields and expansions)."""
    row = truth.rows.get(item.get("id"))  # type: ignore[arg-type]
    if row is None:
        with truth.lock:
            row = next((r for _, _, r in truth.written if r.id == item.get("id")), None)
    if row is None:
        return False
    if (item.get("merchant_id"), item.get("amount"), item.get("status"),
            item.get("created_at"), item.get("transaction_id")) != (
            row.merchant_id, row.amount, row.status, row.created_at, row.transaction_id):
        return False
    user = item.get("user")
    if "user" in q.expand and "user" not in errors:
        if user != truth.users.get(row.user_id):
            return False
    elif user != row.user_id and user != truth.users.get(row.user_id):
        return False
    if "fund_account" in q.expand and "fund_account" not in errors:
        account = item.get("fund_account")
        expected = dict(truth.fund_accounts.get(row.fund_account_id, {}))
        if "fund_account.contact" in q.expand and "fund_account.contact" not in errors:
            expected["contact"] = truth.contacts.get(expected.get("contact"))  # type: ignore
        if account != expected:
            return False
    if "transaction" in q.expand and "transaction" not in errors and row.transaction_id:
        txn = item.get("transaction")
        if not isinstance(txn, dict) or txn.get("id") != row.transaction_id or \
                txn.get("amount") != row.amount:
            return False
    return True


def judge(q: Query, status: int, headers: dict[str, str], body: Any, sent: float,
          received: float, truth: Truth) -> Outcome:
    seconds = received - sent
    if status == 0:
        return Outcome(sent, seconds, 0, designed=False, degraded=True)
    if status >= 500:
        code = body.get("code") if isinstance(body, dict) else None
        designed = bool(code) and (status == 504 or (status == 503 and "retry-after" in headers))
        return Outcome(sent, seconds, status, designed=designed, degraded=True)
    flagged = "x-datapipe-unavailable" in headers or (
        isinstance(body, dict) and body.get("partial") is True)
    if status == 404 and q.kind == "retrieve":
        # Every id asked for exists: a 404 is a wrong answer (a flagged one when marked).
        return Outcome(sent, seconds, status, designed=True, wrong=1, flagged=flagged,
                       degraded=True)
    if status != 200 or not isinstance(body, dict):
        return Outcome(sent, seconds, status, designed=status < 500, wrong=1, degraded=True)
    errors = {e.get("enricher") for e in body.get("errors") or [] if isinstance(e, dict)}
    # A retrieve names its failed enrichers in a header (its body is the object itself).
    errors |= {e.strip() for e in headers.get("x-datapipe-errors", "").split(",") if e.strip()}
    items = [body] if q.kind == "retrieve" else body.get("items")
    if not isinstance(items, list):
        return Outcome(sent, seconds, status, designed=True, wrong=1, degraded=True)
    foreign = sum(1 for i in items if i.get("merchant_id") != q.merchant)
    wrong = sum(1 for i in items if i.get("merchant_id") == q.merchant
                and not check_item(i, q, truth, errors))
    if q.kind == "list":
        got = [i.get("id") for i in items]
        answers = expected_rows(q, truth, sent, received)
        best = min(len(set(got) ^ {r.id for r in rows}) for rows in answers)
        if best == 0 and not any(got == [r.id for r in rows] for rows in answers):
            best = len(got)  # the right rows in a wrong order
        wrong = max(wrong, best)
    elif q.kind == "search":
        wrong = max(wrong, sum(1 for i in items if q.word not in " ".join(
            str(i.get(f, "")) for f in ("narration", "reference_id", "purpose")).lower()))
    degraded = bool(wrong or foreign or flagged or errors)
    return Outcome(sent, seconds, status, designed=True, wrong=wrong, foreign=foreign,
                   flagged=flagged, enrich_errors=bool(errors), degraded=degraded)


class Load:
    """``concurrency`` client threads, each with its keep-alive connection, until stopped."""

    def __init__(self, args: argparse.Namespace, truth: Truth) -> None:
        self.args, self.truth = args, truth
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(args.concurrency)]
        self.sent = 0
        self.idents = 0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def client(self, index: int) -> None:
        rng = random.Random(index)
        conn: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            if not self.running.wait(0.05):
                continue
            with self.lock:
                if self.sent >= self.args.max_requests:
                    self.running.clear()
                    continue
                self.sent += 1
                self.idents += 1
                ident = self.idents
            q = make_query(rng, self.truth)
            headers = {"X-Merchant-Id": str(q.merchant), "X-Auth-Type": q.auth,
                       "X-Bench-Request": str(ident),
                       "Accept": "application/json"}
            sent = time.monotonic()
            status, answer_headers, body = 0, {}, None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.args.port, timeout=10)
                conn.request("GET", q.path(), headers=headers)
                response = conn.getresponse()
                raw = response.read()
                status = response.status
                answer_headers = {k.lower(): v for k, v in response.getheaders()}
                with contextlib.suppress(ValueError):
                    body = json.loads(raw)
                if answer_headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            received = time.monotonic()
            outcome = judge(q, status, answer_headers, body, sent, received, self.truth)
            outcome.ident = ident
            outcome.unavailable = answer_headers.get("x-datapipe-unavailable", "")
            if outcome.wrong or outcome.foreign or not outcome.designed or \
                    outcome.seconds > DEADLINE + 0.05:
                source = answer_headers.get("x-datapipe-source", "-")
                flags = answer_headers.get("x-datapipe-unavailable", "")
                errors = body.get("errors") if isinstance(body, dict) else None
                outcome.what = (f"{q.path()} m{q.merchant} -> {status} "
                                f"in {outcome.seconds * 1000:.0f} ms source={source}"
                                f"{' unavailable=' + flags if flags else ''}"
                                f"{' errors=' + json.dumps(errors) if errors else ''}")
            with self.lock:
                self.outcomes.append(outcome)

    def phase(self, seconds: float) -> list[Outcome]:
        """Load for ``seconds`` (or until ``--max-requests`` of this phase); the outcomes."""
        with self.lock:
            start_index, self.sent = len(self.outcomes), 0
        self.running.set()
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.running.is_set():
            time.sleep(0.05)
        self.running.clear()
        time.sleep(0.01)
        with self.lock:
            return self.outcomes[start_index:]

    def begin(self) -> None:
        """Load until :meth:`end` (bounded by ``--max-requests``)."""
        with self.lock:
            self.sent = 0
        self.running.set()

    def end(self) -> None:
        self.running.clear()

    def between(self, start: float, end: float) -> list[Outcome]:
        """The outcomes of the requests sent in ``[start, end)``."""
        with self.lock:
            return [o for o in self.outcomes if start <= o.sent < end]

    def drain(self, timeout: float = 12.0) -> None:
        """Wait for the requests in flight (they land in the next phase otherwise)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                before = len(self.outcomes)
            time.sleep(0.3)
            with self.lock:
                if len(self.outcomes) == before:
                    return


# -- report ------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * (len(ordered) - 1))))]


def join_server_times(outcomes: list[Outcome]) -> None:
    """Set each outcome's ``queued``/``served`` from the lines gunicorn's workers wrote."""
    times: dict[int, tuple[float, float]] = {}
    for path in TIMING.glob("*.tsv"):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            with contextlib.suppress(ValueError, IndexError):
                times[int(parts[0])] = (float(parts[1]), float(parts[3]))
    for o in outcomes:
        if o.ident in times:
            o.queued, o.served = times[o.ident]


def summarize(name: str, outcomes: list[Outcome], seconds: float, baseline: float | None,
              recovery: list[Outcome] | None, restored_at: float | None) -> dict[str, Any]:
    join_server_times([*outcomes, *(recovery or [])])
    statuses = Counter(o.status for o in outcomes)
    served = [o.served / 1e3 for o in outcomes if o.served is not None]
    queued = [o.queued / 1e3 for o in outcomes if o.queued is not None]
    latencies = [o.seconds for o in outcomes]
    rate = len(outcomes) / seconds if seconds else 0.0
    recover = None
    if recovery is not None and restored_at is not None:
        bad = [o.sent for o in recovery if o.degraded and o.sent >= restored_at]
        recover = max(0.0, max(bad) - restored_at) if bad else 0.0
        # A response sent before the restore finished but answered after it does not count.
    return {
        "fault": name,
        "requests": len(outcomes),
        "statuses": " ".join(f"{k or 'conn'}:{v}" for k, v in sorted(statuses.items())),
        "undesigned_5xx": sum(1 for o in outcomes if not o.designed),
        "wrong_unflagged": sum(o.wrong for o in outcomes if not o.flagged),
        "wrong_flagged": sum(o.wrong for o in outcomes if o.flagged),
        "foreign": sum(o.foreign for o in outcomes),
        "flagged_pages": sum(1 for o in outcomes if o.flagged),
        "enrich_errors": sum(1 for o in outcomes if o.enrich_errors),
        "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=0.0),
        "late": sum(1 for t in latencies if t > DEADLINE + 0.05),
        "srv_max": max(served, default=0.0),
        "srv_late": sum(1 for t in served if t > DEADLINE + 0.05),
        "queue_max": max(queued, default=0.0),
        "client_extra": max((o.seconds - o.served / 1e3 for o in outcomes
                             if o.served is not None), default=0.0),
        "rate": rate, "ratio": (rate / baseline) if baseline else None,
        "recover": recover,
        "recovery_requests": len(recovery or []),
        "recovery_wrong": sum(o.wrong + o.foreign for o in recovery or [] if not o.flagged),
        "recovery_undesigned": sum(1 for o in recovery or [] if not o.designed),
        "unavailable": Counter(o.unavailable for o in outcomes if o.unavailable),
        "examples": [o.what + ("" if o.served is None else
                               f" (server: {o.served:.0f} ms, {o.queued:.0f} ms of it queued)")
                     for o in [*outcomes, *(recovery or [])] if o.what and not o.flagged][:4],
        "server_late": [f"#{o.ident} server {o.served:.0f} ms ({o.queued:.0f} ms queued), "
                        f"client {o.seconds * 1000:.0f} ms, status {o.status}"
                        for o in outcomes if o.served is not None
                        and o.served > (DEADLINE + 0.05) * 1000][:4],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'fault':<14}{'reqs':>6}  {'statuses':<26}{'5xx!':>5}{'wrong':>7}{'flag':>6}"
            f"{'foreign':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'req/s':>7}{'x base':>7}"
            f"{'recover s':>10}{'partial':>8}{'exp.err':>8}{'late':>5}{'srv max':>8}"
            f"{'srv late':>9}{'queue':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        recover = "" if r["recover"] is None else f"{r['recover']:.2f}"
        print(f"{r['fault']:<14}{r['requests']:>6}  {r['statuses']:<26}{r['undesigned_5xx']:>5}"
              f"{r['wrong_unflagged']:>7}{r['wrong_flagged']:>6}{r['foreign']:>8}"
              f"{r['p50'] * 1000:>8.0f}{r['p99'] * 1000:>8.0f}{r['max'] * 1000:>8.0f}"
              f"{r['rate']:>7.1f}{ratio:>7}{recover:>10}{r['flagged_pages']:>8}"
              f"{r['enrich_errors']:>8}{r['late']:>5}{r['srv_max'] * 1000:>8.0f}"
              f"{r['srv_late']:>9}{r['queue_max'] * 1000:>7.0f}")
    print()
    print(f"deadline {DEADLINE * 1000:.0f} ms. 5xx!: undesigned 5xx (or no answer); wrong: "
          f"wrong rows on unflagged pages; flag: wrong rows on pages flagged partial; "
          f"x base: req/s / healthy baseline; recover: seconds from the restore to the last "
          f"unhealthy response; partial: pages flagged as possibly lacking rows; exp.err: "
          f"responses listing a failed enricher; late: answers later than the deadline + 50 ms "
          f"(as the client measured them); srv max, srv late: the same measured by gunicorn "
          f"from the request's arrival (its connection handed to the thread pool) to its last "
          f"byte sent; queue: the longest wait for a gunicorn thread (ms)")
    for r in rows:
        if r["client_extra"] > 0.05:
            print(f"  {r['fault']}: the client measured up to {r['client_extra'] * 1000:.0f} ms "
                  f"more than gunicorn did for one request (the client's own threads waiting "
                  f"for the GIL or a CPU, the loopback, and the worker's main loop before it "
                  f"hands a connection to its threads)")
        if r["recovery_wrong"] or r["recovery_undesigned"]:
            print(f"  after {r['fault']}: {r['recovery_wrong']} wrong/foreign rows and "
                  f"{r['recovery_undesigned']} undesigned 5xx in {r['recovery_requests']} "
                  f"recovery requests")
        if r["unavailable"]:
            named = ", ".join(f"{k} x{v}" for k, v in r["unavailable"].most_common())
            print(f"  {r['fault']}: X-Datapipe-Unavailable: {named}")
        for example in r["examples"]:
            print(f"  {r['fault']}: wrong, undesigned or late: {example}")
        for example in r["server_late"]:
            print(f"  {r['fault']}: late on the server: {example}")


# -- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", default=",".join(ALL_FAULTS))
    parser.add_argument("--baseline-seconds", type=float, default=5.0,
                        help="healthy seconds before each fault (the req/s baseline)")
    parser.add_argument("--fault-seconds", type=float, default=10.0)
    parser.add_argument("--recovery-seconds", type=float, default=4.0)
    # As many clients as gunicorn has threads (2 workers x 4).
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=5000, help="per phase")
    parser.add_argument("--write-interval", type=float, default=0.2)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--ledger-port", type=int, default=8012)
    parser.add_argument("--payouts", type=int, default=20_000)
    parser.add_argument("--log", default="/tmp/datapipe-faults.log")
    parser.add_argument("--time-limit", type=float, default=900.0,
                        help="seconds after which the run stops (restoring everything)")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    for f in faults:
        if f not in ALL_FAULTS:
            parser.error(f"unknown fault {f!r}; known: {', '.join(ALL_FAULTS)}")

    os.environ.update({"DATAPIPE_EXAMPLE_DB": "real", "DJANGO_DEBUG": "0",
                       "DJANGO_SETTINGS_MODULE": "example_project.settings"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import logging

    from django.core.management import call_command

    # This process's own log lines (the writer's cache and pool warnings) go to the log file.
    handler = logging.FileHandler(args.log)
    for name in ("datapipe_django", "psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False

    from django.conf import settings

    from example_project.payouts.models import Payout

    # The writer opens a connection per write (no pool): it writes as soon as a store is back,
    # as an application server that was not part of the outage would.
    for alias in ("default", "replica"):
        if alias in settings.DATABASES:
            settings.DATABASES[alias].get("OPTIONS", {}).pop("pool", None)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(args.time_limit))

    # The load client's threads judge answers in Python while others wait on their sockets: a
    # thread whose answer arrived waits for the GIL before it reads the clock. A shorter switch
    # interval than the default 5 ms bounds that wait, which is the client's, not the server's.
    sys.setswitchinterval(0.0005)
    servers = Servers(args)
    stop = threading.Event()
    FLAG.touch()
    writer: Writer | None = None
    try:
        services("start")
        try:
            seeded = Payout.objects.using("archive").count() >= args.payouts
        except Exception:
            seeded = False
        if not seeded:
            print(f"seeding {args.payouts} payouts ...", flush=True)
            call_command("seed_demo", payouts=args.payouts, verbosity=0)
        Writer.cleanup()  # rows a run that was killed left behind
        truth = load_truth()
        print(f"truth: {len(truth.rows)} payouts; q words: {', '.join(truth.words)}", flush=True)
        servers.start()
        writer = Writer(truth, args.write_interval, stop)
        writer.start()
        writer.enabled.set()
        load = Load(args, truth)
        load.start()
        load.phase(2.0)  # warm-up (caches, pools), not counted
        load.drain()
        rows = []
        healthy: list[Outcome] = []
        healthy_seconds = 0.0
        for fault in faults:
            # A healthy phase right before each fault: the machine is shared, so throughput
            # is compared with what it was a moment ago. The load runs on through injecting
            # and restoring: what happens while a server stops or starts counts too.
            load.begin()
            t_base = time.monotonic()
            time.sleep(args.baseline_seconds)
            if fault in ("primary", "archive"):
                writer.pause()  # the writer keeps both stores equal: it needs both
            t_fault = time.monotonic()
            try:
                servers.inject(fault)
                time.sleep(args.fault_seconds)
            finally:
                t_restore = time.monotonic()
                servers.restore(fault)
                t_restored = time.monotonic()
                writer.enabled.set()
            time.sleep(args.recovery_seconds)
            t_end = time.monotonic()
            load.end()
            load.drain()
            before = load.between(t_base, t_fault)
            healthy += before
            healthy_seconds += t_fault - t_base
            base = summarize("healthy", before, t_fault - t_base, None, None, None)
            rows.append(summarize(fault, load.between(t_fault, t_restore), t_restore - t_fault,
                                  base["rate"], load.between(t_restore, t_end), t_restored))
            print_table(rows[-1:])
            sys.stdout.flush()
        print()
        rows.insert(0, summarize("healthy", healthy, healthy_seconds, None, None, None))
        print_table(rows)
        print(f"writer: {len(truth.written)} payouts written, {writer.failures} failed")
    finally:
        signal.alarm(0)
        stop.set()
        servers.restore_all()
        servers.stop()
        with contextlib.suppress(Exception):
            services("start")
        if writer is not None:
            writer.cleanup()
        FLAG.unlink(missing_ok=True)
        shutil.rmtree(TIMING, ignore_errors=True)


if __name__ == "__main__":
    main()
