"""The built wheel, installed into a fresh virtualenv outside the checkout, runs a project.

``scripts/test.sh`` builds the sdist and the wheel (``python -m build``), checks them with
``twine check`` and passes the wheel as ``DATAPIPE_WHEEL``; run alone, this module builds a
wheel of the checkout first. The virtualenv gets the wheel and what it depends on from the
package index, nothing from the checkout or the interpreter running the tests, and the
project runs from a directory outside the checkout: what it imports is what a user installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = """
SECRET_KEY = "smoke-test"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_filters",
    "rest_framework",
    "datapipe_django",
    "people",
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "primary.sqlite3"},
    "archive": {"ENGINE": "django.db.backends.sqlite3", "NAME": "archive.sqlite3"},
}
DATABASE_ROUTERS = ["datapipe_django.routers.PrimaryReplicaRouter"]
DATAPIPE = {"PRIMARY": "default", "ARCHIVES": ["archive"], "TIMEOUT": 2.0}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""

PIPELINES = """
import django_filters
from django.contrib.auth.models import User

from datapipe_django import FallbackMode, Pipeline
from datapipe_django.enrichers import PrefetchEnricher
from datapipe_django.fetchers import ORMFetcher


class UserFilterSet(django_filters.FilterSet):
    date_joined = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = User
        fields = ["is_staff"]


users = Pipeline(
    "users",
    model=User,
    filterset_class=UserFilterSet,
    search_fields=("username",),
    ordering=("-date_joined", "-id"),
    fetchers=[
        ORMFetcher(using="default", name="appdb"),
        ORMFetcher(using="archive", name="archive"),
    ],
    fallback=FallbackMode.SEQUENTIAL,
    enrichers=[PrefetchEnricher("groups")],
)
"""

VIEWS = """
from django.contrib.auth.models import Group, User
from rest_framework import serializers

from datapipe_django.rest import ExpandableField, PipelineViewSet
from people.pipelines import users


class GroupSerializer(serializers.ModelSerializer):
    class Meta:
        model = Group
        fields = ("id", "name")


class UserSerializer(serializers.ModelSerializer):
    groups = ExpandableField(GroupSerializer, many=True)

    class Meta:
        model = User
        fields = ("id", "username", "groups")


class UserViewSet(PipelineViewSet):
    pipeline = users
    serializer_class = UserSerializer
"""

URLS = """
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from people.views import UserViewSet

router = SimpleRouter(trailing_slash=False)
router.register("users", UserViewSet)
urlpatterns = [path("v1/", include(router.urls))]
"""

# Migrates both databases, writes rows to each (the archive keeps the older users), asks the
# API for pages and prints what it saw as JSON.
RUN = """
import datetime as dt
import io
import json
import os

os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
import django

django.setup()
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

import datapipe_django

for alias in ("default", "archive"):
    call_command("migrate", database=alias, verbosity=0)
base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
staff = Group.objects.create(name="staff")
for i in range(1, 4):  # recent users: the application database
    User.objects.create(id=i, username=f"recent{i}", date_joined=base + dt.timedelta(days=i))
User.objects.get(id=3).groups.add(staff)
for i in range(4, 7):  # older users: the archive only
    User.objects.using("archive").create(id=i, username=f"old{i}",
                                         date_joined=base - dt.timedelta(days=i))
client = Client()
first = client.get("/v1/users", {"limit": 2, "expand[]": "groups"})
rest = client.get("/v1/users", {"cursor": first.json()["next_cursor"], "limit": 10})
bad = client.get("/v1/users", {"limit": 0})
listing = io.StringIO()
call_command("datapipe", "list", stdout=listing)
print(json.dumps({
    "module": datapipe_django.__file__,
    "first": first.json(),
    "first_source": first["X-Datapipe-Source"],
    "rest": rest.json(),
    "rest_source": rest["X-Datapipe-Source"],
    "bad": [bad.status_code, bad.json()],
    "list": listing.getvalue(),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("DATAPIPE_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [built] = out.glob("datapipe_django-*.whl")
    return built


def test_the_wheel_holds_the_package_and_its_data(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "datapipe_django/py.typed" in names
    assert "datapipe_django/migrations/0001_pendingindex.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "example_project/", "benchmarks/")) for n in names)


def test_the_wheel_in_a_clean_virtualenv_serves_a_project(wheel: Path, tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # no system site-packages: only what pip installs
    python = env_dir / "bin" / "python"
    clean = {k: v for k, v in os.environ.items()
             if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"}}
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   env=clean, timeout=600)
    project = tmp_path / "project"
    (project / "people").mkdir(parents=True)
    files = {"settings.py": SETTINGS, "urls.py": URLS, "run.py": RUN,
             "people/__init__.py": "", "people/pipelines.py": PIPELINES,
             "people/views.py": VIEWS}
    for name, text in files.items():
        (project / name).write_text(textwrap.dedent(text))
    done = subprocess.run([str(python), "run.py"], cwd=project, env=clean, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # The installed copy was imported, not the checkout's.
    assert Path(seen["module"]).is_relative_to(env_dir)
    assert not Path(seen["module"]).is_relative_to(ROOT)
    first = seen["first"]
    assert [u["username"] for u in first["items"]] == ["recent3", "recent2"]
    assert first["items"][0]["groups"] == [{"id": 1, "name": "staff"}]
    assert first["entity"] == "collection" and first["has_more"] is True
    assert seen["first_source"] == "appdb"
    # The next page runs out of the application database and continues in the archive.
    assert [u["username"] for u in seen["rest"]["items"]] == ["recent1", "old4", "old5", "old6"]
    assert seen["rest"]["has_more"] is False and seen["rest_source"] == "appdb,archive"
    assert seen["bad"] == [400, {"limit": ["Ensure this value is greater than or equal to 1."]}]
    assert "date_joined_after, date_joined_before, is_staff" in seen["list"]
