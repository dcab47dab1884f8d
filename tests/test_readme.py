"""The README's quick start runs as written.

Every code block of the README that follows a ``<!-- quickstart: PATH -->`` line is written to
``PATH`` in a fresh project (blocks for one path are joined in README order; see
CONTRIBUTING.md). The test adds only what the README says is the user's own: the start of
``settings.py`` (secret key, URLconf, the project's apps), ``manage.py`` and the ``payouts``
app's models, FilterSet and ledger client (the example project's). It gives the databases
names of their own, so that the run never touches the example's, migrates on the real
PostgreSQL primary and MariaDB archive, runs ``manage.py check``, seeds a few rows and serves
requests through the README's router: the list, its next page, an archived page, tenant
isolation, and the item's keys against the output the README shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import require_alias

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^<!-- quickstart: (\S+) -->\n```python\n(.*?)^```$", re.M | re.S)
SUFFIX = os.environ.get("DATAPIPE_TEST_DB_SUFFIX", "")
DATABASE = f"datapipe_readme{SUFFIX}"
ARCHIVE = f"datapipe_archive_readme{SUFFIX}"

# The user's own settings.py begins like this; the README's block is added to it.
PREAMBLE = """\
SECRET_KEY = "readme-quick-start"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "payouts"]
LEDGER_URL = "http://127.0.0.1:9"  # no ledger runs: expanding transaction reports it
"""

# After the README's block: the test's own database names (the servers are the README's).
POSTAMBLE = f"""
DATABASES["default"]["NAME"] = DATABASES["replica"]["NAME"] = {DATABASE!r}
DATABASES["archive"]["NAME"] = {ARCHIVE!r}
"""

MANAGE = """\
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

# Seeds both databases (the application database keeps the last 30 days, the archive every
# payout, with the same ids), then asks the API and prints what it answered.
RUN = """\
import datetime as dt, json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
import django
django.setup()
from django.utils import timezone
from rest_framework.test import APIClient
from payouts.models import Contact, FundAccount, Merchant, MerchantUser, Payout

now = timezone.now()
for alias in ("default", "archive"):
    for m in (1, 2):
        Merchant.objects.using(alias).create(id=m, name=f"merchant {m}")
        MerchantUser.objects.using(alias).create(id=m, merchant_id=m, name=f"user {m}",
                                                 email=f"u{m}@example.com")
        Contact.objects.using(alias).create(id=m, merchant_id=m, name=f"contact {m}",
                                            type="vendor")
        FundAccount.objects.using(alias).create(id=m, merchant_id=m, contact_id=m,
                                                account_type="vpa", details=f"m{m}@upi")
    for i in range(1, 41):  # one payout a day for 40 days: odd ids merchant 1, even 2
        created = now - dt.timedelta(days=i, minutes=i)
        if alias == "default" and i > 30:
            continue  # the application database keeps 30 days
        Payout.objects.using(alias).create(
            id=i, merchant_id=2 - i % 2, user_id=2 - i % 2, fund_account_id=2 - i % 2,
            amount=1000 * i, status="processed" if i % 3 else "reversed", mode="UPI",
            purpose="salary", narration=f"payout {i}", reference_id=f"REF-{i}",
            transaction_id=f"txn_{i}", created_at=created)

class Caller:  # what request.user is for the README's get_tenant()
    is_authenticated = True
    def __init__(self, merchant_id):
        self.merchant_id = merchant_id

client = APIClient()
client.force_authenticate(Caller(1))
seen = {}
def get(name, query):
    response = client.get("/v1/payouts", query)
    seen[name] = {"status": response.status_code, "body": response.json(),
                  "source": response.headers.get("X-Datapipe-Source")}
    return seen[name]["body"]

first = get("first", {"status": "processed", "limit": 3, "expand[]": "user"})
get("next", {"status": "processed", "limit": 3, "cursor": first["next_cursor"]})
old = (now - dt.timedelta(days=33)).isoformat()
get("archived", {"created_at_before": old, "limit": 2})
get("bad", {"status": "paid", "limit": 500})
get("transaction", {"limit": 1, "expand[]": "transaction"})
client.force_authenticate(Caller(2))
get("other", {"limit": 50})
print(json.dumps(seen))
"""


def quickstart_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for path, code in BLOCK.findall(README.read_text()):
        files[path] = files.get(path, "") + code + "\n"
    return files


def readme_item_keys() -> set[str]:
    """The keys of the first item the README shows (the demo's first curl, a public caller)."""
    text = README.read_text()
    line = next(row for row in text.splitlines() if row.startswith('{"entity":"collection"'))
    return set(json.loads(line)["items"][0])


def test_the_readme_marks_each_part_of_the_quick_start():
    files = quickstart_files()
    assert set(files) == {"settings.py", "payouts/pipelines.py", "payouts/serializers.py",
                          "payouts/views.py", "urls.py"}
    for path, code in files.items():
        compile(code, f"README.md: {path}", "exec")  # each block is Python on its own


def create_databases() -> None:
    import MySQLdb
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres",
                         autocommit=True) as pg:
        pg.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        pg.execute(f'CREATE DATABASE "{DATABASE}"')
    my = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    try:
        cursor = my.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{ARCHIVE}`")
        cursor.execute(f"CREATE DATABASE `{ARCHIVE}` CHARACTER SET utf8mb4")
    finally:
        my.close()


def drop_databases() -> None:
    import MySQLdb
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres",
                         autocommit=True) as pg:
        pg.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    my = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    try:
        my.cursor().execute(f"DROP DATABASE IF EXISTS `{ARCHIVE}`")
    finally:
        my.close()


@pytest.mark.postgres
@pytest.mark.mysql
def test_the_quick_start_runs_in_a_fresh_project(tmp_path: Path):
    for alias in ("primary", "replica", "archive"):
        require_alias(alias)
    assert settings.DATABASES["primary"]["PORT"] == 5432  # the README's servers
    project = tmp_path / "project"
    app = project / "payouts"
    (app / "migrations").mkdir(parents=True)
    example = ROOT / "example_project"
    shutil.copy(example / "payouts" / "models.py", app / "models.py")
    shutil.copy(example / "payouts" / "migrations" / "0001_initial.py", app / "migrations")
    (app / "migrations" / "__init__.py").write_text("")
    (app / "__init__.py").write_text("")
    filters = (example / "payouts" / "filters.py").read_text()
    (app / "filters.py").write_text(filters.replace("example_project.payouts.models",
                                                    "payouts.models"))
    ledger = (example / "ledger" / "client.py").read_text()
    (app / "ledger.py").write_text(ledger + "\n\nledger = LedgerClient()\n")
    files = quickstart_files()
    files["settings.py"] = PREAMBLE + files["settings.py"] + POSTAMBLE
    for path, code in files.items():
        (project / path).write_text(code)
    (project / "manage.py").write_text(MANAGE)
    (project / "run.py").write_text(textwrap.dedent(RUN))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's datapipe_django, the project's own apps

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=project, env=env, text=True,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    create_databases()
    try:
        for alias in ("default", "archive"):
            run("manage.py", "migrate", f"--database={alias}", "--verbosity=0")
        run("manage.py", "check", "--fail-level=WARNING")
        seen = json.loads(run("run.py"))
    finally:
        drop_databases()

    first = seen["first"]
    assert first["status"] == 200 and first["source"] == "appdb"
    body = first["body"]
    assert set(body) == {"entity", "count", "has_more", "next_cursor", "items"}
    items = body["items"]
    # Merchant 1's processed payouts, newest first.
    assert [item["id"] for item in items] == [1, 5, 7]  # 3 and 9 are reversed
    assert items[0]["user"] == {"id": 1, "name": "user 1", "email": "u1@example.com"}
    assert items[0]["fund_account"] == 1  # a private caller sees it, unexpanded
    # The README's output is a public caller's: the same keys, less the private ones.
    assert set(items[0]) - {"fund_account", "utr"} == readme_item_keys()
    assert [i["id"] for i in seen["next"]["body"]["items"]] == [11, 13, 17]
    archived = seen["archived"]
    assert archived["status"] == 200 and "archive" in archived["source"].split(",")
    assert [i["id"] for i in archived["body"]["items"]] == [33, 35]
    assert seen["bad"]["status"] == 400 and set(seen["bad"]["body"]) == {"limit", "status"}
    # No ledger runs: the page is served, the expansion reported.
    assert seen["transaction"]["status"] == 200
    assert seen["transaction"]["body"]["items"][0]["transaction"] == "txn_1"
    assert seen["transaction"]["body"]["errors"][0]["enricher"] == "transaction"
    # Another merchant sees its own payouts only.
    other = [i["id"] for i in seen["other"]["body"]["items"]]
    assert other == list(range(2, 41, 2))
