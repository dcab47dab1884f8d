"""benchmarks/: the one way every table is measured (benchmarks/common.py) and the HTTP
benchmark's two ways of being run (benchmarks/http.py, a name the standard library uses)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent


# -- interleaved rounds ------------------------------------------------------------------------

def recorder(names: list[str]) -> tuple[dict[str, object], list[str]]:
    calls: list[str] = []
    return {name: (lambda name=name: calls.append(name)) for name in names}, calls


@given(sides=st.integers(1, 4), rounds=st.integers(1, 5), n=st.integers(1, 6),
       warmup=st.integers(0, 3))
def test_interleaved_alternates_call_by_call_and_rotates_the_first_side(sides, rounds, n,
                                                                          warmup):
    names = [f"s{i}" for i in range(sides)]
    fns, calls = recorder(names)
    samples = common.interleaved(fns, rounds, n, warmup=warmup)

    assert list(samples) == names
    assert all(len(per_round) == rounds and all(len(r) == n for r in per_round)
               for per_round in samples.values())
    assert calls[: warmup * sides] == names * warmup
    timed = calls[warmup * sides:]
    assert len(timed) == rounds * n * sides
    for r in range(rounds):
        block = timed[r * n * sides:(r + 1) * n * sides]
        first = names[r % sides]
        order = names[names.index(first):] + names[:names.index(first)]
        assert block == order * n  # a, b, a, b ... within the round


@given(sides=st.integers(1, 4), rounds=st.integers(1, 5), n=st.integers(1, 6))
def test_back_to_back_runs_each_sides_calls_in_a_row(sides, rounds, n):
    names = [f"s{i}" for i in range(sides)]
    fns, calls = recorder(names)
    common.interleaved(fns, rounds, n, back_to_back=True)

    for r in range(rounds):
        block = calls[r * n * sides:(r + 1) * n * sides]
        first = names.index(names[r % sides])
        order = names[first:] + names[:first]
        assert block == [name for name in order for _ in range(n)]


@given(st.lists(st.floats(0.001, 1e3), min_size=1, max_size=60))
def test_spread_is_the_median_between_its_deciles(values):
    med, lo, hi = common.spread(values)
    eps = 1e-9 * max(values)  # the deciles interpolate: a rounding error apart at most
    assert med == statistics.median(values)
    assert min(values) - eps <= lo <= med + eps and med - eps <= hi <= max(values) + eps
    assert common.fmt(values, digits=3).startswith(f"{med:.3f} (")


@given(st.lists(st.lists(st.tuples(st.floats(0.01, 100), st.floats(0.01, 100)), min_size=1,
                         max_size=8), min_size=1, max_size=5))
def test_round_ratios_pair_the_ith_calls_of_each_round(rounds):
    a = [[x for x, _ in r] for r in rounds]
    b = [[y for _, y in r] for r in rounds]
    assert common.round_ratios(a, b) == [
        statistics.median(x / y for x, y in r) for r in rounds]


def test_spread_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        common.spread([])


# -- benchmarks/http.py, two ways --------------------------------------------------------------

def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("argv", [
    ("benchmarks/http.py", "--help"),
    ("-m", "benchmarks.http", "--help"),
    ("benchmarks/http_load.py", "--help"),  # the old name, kept for one release
])
def test_http_benchmark_runs_as_a_script_and_as_a_module(argv):
    # --help runs every module-level import (urllib.request imports http.client) first.
    done = run(*argv)
    assert done.returncode == 0, done.stderr
    assert "--concurrency" in done.stdout


def test_http_benchmark_runs_from_another_directory(tmp_path):
    done = run(str(ROOT / "benchmarks" / "http.py"), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_script_run_from_benchmarks_gets_the_standard_librarys_http():
    # What a sibling script run as `python benchmarks/x.py` sees: this folder first on sys.path.
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import http.client, http.cookies; "
            "print(http.__file__); print(http.client.HTTPConnection.__name__)")
    done = run("-c", code)
    assert done.returncode == 0, done.stderr
    path, name = done.stdout.split()
    assert Path(path).parent.name == "http" and "benchmarks" not in path
    assert name == "HTTPConnection"


# -- faults.py: the server's own times beside the client's ------------------------------------

def test_gunicorn_timing_writes_each_marked_request_and_faults_joins_it(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from benchmarks import faults, gunicorn_timing

    monkeypatch.setenv("DATAPIPE_BENCH_TIMING_DIR", str(tmp_path))
    handed: list[object] = []
    worker = SimpleNamespace(enqueue_req=handed.append,
                             handle_request=lambda req, conn: gunicorn_timing.pre_request(
                                 worker, req))
    gunicorn_timing.post_fork(None, worker)
    conn, req = SimpleNamespace(), SimpleNamespace()
    worker.enqueue_req(conn)  # the connection handed to the thread pool...
    assert handed == [conn]
    worker.handle_request(req, conn)  # ...taken by a thread
    gunicorn_timing.post_request(worker, req, {"HTTP_X_BENCH_REQUEST": "7"}, None)
    gunicorn_timing.post_request(worker, req, {}, None)  # unmarked: not written
    worker.datapipe_timing.close()
    (line,) = (tmp_path / next(p.name for p in tmp_path.iterdir())).read_text().splitlines()
    ident, queued, handled, total = line.split("\t")
    assert ident == "7" and float(total) == pytest.approx(float(queued) + float(handled),
                                                          abs=0.02)

    monkeypatch.setattr(faults, "TIMING", tmp_path)
    (tmp_path / "other.tsv").write_text("8\t1500.00\t520.00\t2020.00\n9\tbad\n")
    late = faults.Outcome(sent=0.0, seconds=2.3, status=200, designed=True, ident=8)
    unknown = faults.Outcome(sent=0.1, seconds=0.1, status=200, designed=True, ident=99)
    row = faults.summarize("ledger-frozen", [late, unknown], 10.0, None, None, None)
    assert (late.queued, late.served) == (1500.0, 2020.0)
    assert unknown.served is None
    assert row["srv_max"] == pytest.approx(2.02) and row["queue_max"] == pytest.approx(1.5)
    assert row["srv_late"] == 0 and row["late"] == 1  # late as the client saw it only
    assert row["client_extra"] == pytest.approx(0.28)
