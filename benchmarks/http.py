"""Ours against hand-written DRF over HTTP: one gunicorn, the real PostgreSQL, wrk.

    python benchmarks/http.py [--duration 3] [--rounds 3] [--concurrency 1 16 32]
    python -m benchmarks.http ...            (the same)

Serves ``benchmarks/http_app.py`` (ours and the hand-written views of ``benchmarks/views.py``
and more, see there) on one gunicorn bound to 127.0.0.1 (2 workers of 4 threads), and drives
it with wrk (the Debian package; installed with apt-get when missing) at each concurrency, ours
and DRF alternating (which goes first alternates too), ``--rounds`` runs of ``--duration``
seconds each. Bounded: 6 cases x 2 sides x rounds x concurrencies runs of wrk, then gunicorn is
stopped. It checks first that both sides of each case answer the same items.

Cases (ours / DRF): a first page of 50; a filtered page (``status=processed``); a deep page
(ours at a cursor 4,000 rows in, DRF at ``offset=4000``); one expand (owner); three expands
(owner, category, tags); a cached page (ours' ``CachedFetcher`` hit on Redis / DRF's first page).

Prints per case and concurrency: req/s of each side (median of rounds, p10-p90 over rounds)
and the ratios ours/DRF of req/s, p50 and p99 latency (per round, then median and p10-p90
over rounds).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python benchmarks/http.py`` (or any script of this folder run so), this folder comes
# first on sys.path, where this very module would hide the standard library's ``http`` package
# from everything importing it (urllib, Django, gunicorn). So: drop the folder from sys.path and
# put the checkout's root there (``benchmarks`` is imported from it); and when this module was
# imported *as* ``http``, hand the name to the standard library's package (the import system
# returns what ``sys.modules`` holds once the module ran). ``python -m benchmarks.http`` needs
# neither.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
if __name__ == "http":
    import importlib

    del sys.modules["http"]
    sys.modules["http"] = importlib.import_module("http")

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from benchmarks import common  # noqa: E402

TENANT, PAGE, DEEP = "t1", 50, 4_000


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env,
                      stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                       check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env,
                       stdout=subprocess.DEVNULL, check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk could not be installed")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(base: str, path: str) -> dict:
    request = urllib.request.Request(base + path, headers={"X-Tenant": TENANT})
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}")
        return json.loads(response.read())


def wait_up(base: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            get(base, "/drf/items?limit=1")
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer in time")


def deep_cursor(base: str) -> str:
    """The cursor of ours after DEEP rows (pages of 100)."""
    cursor, seen = None, 0
    while seen < DEEP:
        body = get(base, "/ours/items?limit=100" + (f"&cursor={cursor}" if cursor else ""))
        seen += len(body["items"])
        cursor = body["next_cursor"]
    return str(cursor)


def cases(base: str) -> list[tuple[str, str, str]]:
    filtered = f"limit={PAGE}&status=processed"
    return [
        ("first page", f"/ours/items?limit={PAGE}", f"/drf/items?limit={PAGE}"),
        ("filtered page", f"/ours/items?{filtered}", f"/drf/items?{filtered}"),
        ("deep: cursor / offset", f"/ours/items?limit={PAGE}&cursor={deep_cursor(base)}",
         f"/drf/items?limit={PAGE}&offset={DEEP}"),
        ("one expand", f"/ours/expand1?limit={PAGE}&expand=owner", f"/drf/expand1?limit={PAGE}"),
        ("three expands", f"/ours/expand3?limit={PAGE}&expand=owner,category,tags",
         f"/drf/expand3?limit={PAGE}"),
        ("cached page", f"/ours/cached?limit={PAGE}", f"/drf/items?limit={PAGE}"),
    ]


def same_items(base: str, table: list[tuple[str, str, str]]) -> None:
    def normal(items: list[dict]) -> str:
        return json.dumps([{**i, **({"tags": sorted(i["tags"], key=lambda t: t["id"])}
                                    if "tags" in i else {})} for i in items], sort_keys=True)

    for label, ours, drf in table:
        a, b = get(base, ours)["items"], get(base, drf)["items"]
        if len(a) != PAGE or normal(a) != normal(b):
            raise SystemExit(f"{label}: ours and DRF answer different items\n{a[:1]}\n{b[:1]}")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


FAULT_RUN = Path("/tmp/datapipe-FAULT-RUN-IN-PROGRESS")  # servers stopped on purpose meanwhile


def wrk(binary: str, url: str, connections: int, duration: float) -> dict[str, float]:
    """One wrk run; a run with error answers (a server restarted meanwhile) is run again, at
    most twice, after any fault injection of the test suite has ended."""
    for attempt in range(3):
        result = wrk_once(binary, url, connections, duration, last=attempt == 2)
        if result is not None:
            return result
        print(f"  (non-2xx answers from {url}: run again)", flush=True)
        for _ in range(120):
            if not FAULT_RUN.exists():
                break
            time.sleep(1)
    raise AssertionError("unreachable")


def wrk_once(binary: str, url: str, connections: int, duration: float, *, last: bool
             ) -> dict[str, float] | None:
    threads = min(connections, 2)
    out = subprocess.run(
        [binary, "-t", str(threads), "-c", str(connections), "-d", f"{int(duration)}s",
         "--timeout", "10s", "--latency", "-H", f"X-Tenant: {TENANT}", url],
        capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and not last:
        return None
    if not rps or "50" not in lat or "99" not in lat or errors:
        raise SystemExit(f"wrk {url}: unexpected output\n{out}")

    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(number) * _UNITS[unit]

    return {"rps": float(rps.group(1)), "p50": ms(lat["50"]), "p99": ms(lat["99"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per side and cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cases", nargs="+", default=[], metavar="CASE",
                        help="only the cases whose label starts with one of these "
                             "(e.g. --cases 'one expand' cached); default: every case")
    args = parser.parse_args()
    if not 1 <= args.duration <= 30 or not 1 <= args.rounds <= 10:
        sys.exit("--duration 1-30 s, --rounds 1-10")

    binary = ensure_wrk()
    common.ensure_postgres_database(os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1"),
                                    int(os.environ.get("DATAPIPE_PG_PORT", "5432")),
                                    "datapipe_bench_http")
    from benchmarks import http_app  # configures Django and declares the views

    http_app.seed()
    from django.db import connections

    connections.close_all()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "benchmarks.http_app:application", "--bind",
         f"127.0.0.1:{port}", "--workers", str(args.workers), "--worker-class", "gthread",
         "--threads", str(args.threads), "--log-level", "warning", "--keep-alive", "30"],
        cwd=ROOT, start_new_session=True)
    try:
        wait_up(base, process)
        table = [case for case in cases(base)
                 if not args.cases or case[0].startswith(tuple(args.cases))]
        if not table:
            sys.exit(f"no case starts with {args.cases}")
        same_items(base, table)
        for _, ours, drf in table:  # warm every worker's connections and plans
            wrk(binary, base + ours, 4, 1)
            wrk(binary, base + drf, 4, 1)
        print(f"{common.machine()}; gunicorn "
              f"{args.workers} workers x {args.threads} threads (gthread) on 127.0.0.1; "
              f"PostgreSQL {http_app.PG_HOST}:{http_app.PG_PORT}/{http_app.PG_NAME}, "
              f"{http_app.ROWS} rows; page {PAGE}; wrk {args.rounds} x {args.duration:g} s "
              f"per side and cell, alternating\n")
        head = (f"{'case':<22} {'conc':>4} {'ours req/s':>16} {'DRF req/s':>16} "
                f"{'req/s ratio':>18} {'p50 ratio':>18} {'p99 ratio':>18}")
        print(head)
        print("-" * len(head))
        for connections_ in args.concurrency:
            for label, ours, drf in table:
                runs: dict[str, list[dict[str, float]]] = {"ours": [], "drf": []}
                for r in range(args.rounds):
                    order = [("ours", ours), ("drf", drf)]
                    for side, path in order if r % 2 == 0 else order[::-1]:
                        runs[side].append(wrk(binary, base + path, connections_,
                                              args.duration))

                def ratio(key: str, runs: dict = runs) -> str:
                    return common.fmt([a[key] / b[key] for a, b in zip(
                        runs["ours"], runs["drf"], strict=True)])

                def rate(side: str, runs: dict = runs) -> str:
                    return common.fmt([r["rps"] for r in runs[side]], 1, 0)

                print(f"{label:<22} {connections_:>4} {rate('ours'):>16} {rate('drf'):>16} "
                      f"{ratio('rps'):>18} {ratio('p50'):>18} {ratio('p99'):>18}", flush=True)
        print("\n(req/s: median of the rounds, p10-p90 over rounds; ratios ours / DRF per round, "
              "median and p10-p90 over rounds: req/s above 1 and latency below 1 are ours "
              "ahead)")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
