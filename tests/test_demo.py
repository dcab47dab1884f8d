"""``scripts/demo.sh`` installs into a virtualenv of its own and serves the example API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def where_datapipe_is(python: str | Path) -> str:
    return subprocess.run([str(python), "-c", "import datapipe_django; "
                           "print(datapipe_django.__file__)"], capture_output=True, text=True,
                          cwd="/", check=False).stdout.strip()


def test_the_demo_uses_its_own_virtualenv_and_serves_the_api(tmp_path: Path):
    before = where_datapipe_is(sys.executable)
    port, ledger_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHON", "VIRTUAL_ENV", "DATAPIPE_EXAMPLE_DB", "PYTHONPATH",
                         "DJANGO_SETTINGS_MODULE"}}
    env.update(PORT=str(port), LEDGER_PORT=str(ledger_port), BASE_PYTHON=sys.executable)
    log = (tmp_path / "demo.log").open("w")
    demo = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/payouts?limit=2",
                                            timeout=5) as response:
                    body = json.load(response)
                    source = response.headers["X-Datapipe-Source"]
                break
            except OSError:
                time.sleep(0.5)
        text = (tmp_path / "demo.log").read_text()
        assert body is not None, text
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)  # the script, its server and its ledger
            demo.wait(timeout=30)
        log.close()
    assert body["entity"] == "collection" and body["count"] == 2 and body["has_more"] is True
    assert source == "appdb"
    # Installed into the checkout's .venv (git-ignored), not into the interpreter it came from.
    venv_python = ROOT / ".venv" / "bin" / "python"
    assert Path(where_datapipe_is(venv_python)).is_relative_to(ROOT / "datapipe_django")
    assert subprocess.run([str(venv_python), "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, check=True
                          ).stdout.strip() == str(ROOT / ".venv")
    # The interpreter it came from was left alone: it does not import this checkout unless it
    # did before (another checkout may be installed into it meanwhile, on a shared machine).
    after = where_datapipe_is(sys.executable)
    assert after == before or not Path(after).is_relative_to(ROOT)
    ignored = subprocess.run(["git", "check-ignore", "-q", ".venv/"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
