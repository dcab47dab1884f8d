"""`DatapipePanel` in django-debug-toolbar.

With the toolbar's own test setup (a ``DebugToolbar`` for a request, its panel by id,
``enable_instrumentation`` → the view → ``generate_stats`` → ``content``, as the toolbar's
panel tests do), and in a real browser: the example project served by ``runserver`` with the
toolbar on, its list page opened in headless Chromium, the Datapipe panel clicked open, its
content read from the page and a screenshot saved (``DATAPIPE_SCREENSHOT``: where; default a
temporary directory).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from debug_toolbar.toolbar import DebugToolbar
from django.http import HttpResponse
from django.test import RequestFactory
from rest_framework.test import APIRequestFactory

from datapipe_django import Pipeline
from datapipe_django.enrichers import PrefetchEnricher
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.test import InMemoryFetcher
from tests.helpers import list_view
from tests.services import IN_CI
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item, Owner

ROOT = Path(__file__).resolve().parent.parent
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def pipeline() -> Pipeline:
    return Pipeline(
        "toolbar-items", model=Item, filterset_class=ItemFilterSet, search_fields=("name",),
        tenant_field="tenant", ordering=("-created_at", "-id"), register=False,
        fetchers=[
            # declines (a predicate), then one that is down, then one that answers (cached)
            InMemoryFetcher([], name="recent", can_handle=lambda r: r.search is not None),
            InMemoryFetcher([], name="flaky", available=False),
            CachedFetcher(ORMFetcher("default", name="appdb"), ttl=30),
        ],
        enrichers=[PrefetchEnricher("owner")],
        # No deadline: everything runs on the test's thread (a pool thread's connection to
        # the transactional test's database would outlive the test).
        timeout=None,
    )


def run_in_toolbar(view, params):
    """One request through the panel, the way django-debug-toolbar's panel tests do it."""
    request = RequestFactory().get("/items", params)
    toolbar = DebugToolbar(request, lambda r: HttpResponse())
    toolbar.stats = {}
    panel = toolbar.get_panel_by_id("DatapipePanel")
    panel.enable_instrumentation()
    try:
        response = view(APIRequestFactory().get("/items", params))
    finally:
        panel.disable_instrumentation()
    panel.generate_stats(request, response)
    return panel, response


@pytest.mark.django_db(transaction=True)  # committed: the second page is a cache hit
def test_the_panel_shows_sources_verdicts_queries_enrichers_timings_and_cache():
    Owner.objects.create(id=1, name="Ann")
    Item.objects.bulk_create([
        Item(id=i, tenant="t1", name=f"item {i}", status="queued", amount=i, day=BASE.date(),
             created_at=BASE + dt.timedelta(hours=i), owner_id=1) for i in range(1, 6)])
    view = list_view(pipeline())
    panel, response = run_in_toolbar(view, {"limit": 2, "expand": "owner", "total": "true",
                                            "status": "queued"})
    assert response.status_code == 200
    [execution] = panel.get_stats()["executions"]
    assert execution["pipeline"] == "toolbar-items" and execution["served_by"] == ["appdb"]
    outcomes = {s["name"]: (s["outcome"], s["reason"]) for s in execution["sources"]}
    assert outcomes["recent"] == ("declined", "declined by <lambda>")
    assert outcomes["flaky"] == ("unavailable", "switched off")
    assert outcomes["appdb"] == ("ok", "")
    appdb = next(s for s in execution["sources"] if s["name"] == "appdb")
    assert appdb["cache"] == "miss" and appdb["rows"] == 3
    assert appdb["holds"] and appdb["plan"].startswith("reads")
    assert 'FROM "testapp_item"' in appdb["sql"] and "'queued'" in appdb["sql"]
    assert [e["name"] for e in execution["enrichers"]] == ["owner"]
    assert [t["stage"] for t in execution["timings"]] == ["validate", "fetch", "transform",
                                                          "enrich", "build"]
    assert execution["total"]["exact"] is False and "flaky" in execution["total"]["reason"]
    assert panel.nav_subtitle.startswith("1 execution in ")
    json.dumps(panel.get_stats())  # the toolbar stores it as JSON
    html = panel.content
    for text in ("toolbar-items", "declined by &lt;lambda&gt;", "unavailable", "appdb",
                 "FROM &quot;testapp_item&quot;", "owner", "enrich", "miss"):
        assert text in html, text
    again, _ = run_in_toolbar(view, {"limit": 2, "expand": "owner", "status": "queued"})
    [second] = again.get_stats()["executions"]
    assert next(s for s in second["sources"] if s["name"] == "appdb")["cache"] == "hit"


@pytest.mark.django_db
def test_a_request_without_pipeline_and_other_threads_executions_are_not_shown():
    import threading

    request = RequestFactory().get("/")
    toolbar = DebugToolbar(request, lambda r: HttpResponse())
    toolbar.stats = {}
    panel = toolbar.get_panel_by_id("DatapipePanel")
    panel.enable_instrumentation()
    p = Pipeline("toolbar-memory", model=Item, fetchers=[InMemoryFetcher([])], register=False)
    worker = threading.Thread(target=p.execute, kwargs={"limit": 1})
    worker.start()
    worker.join()
    panel.disable_instrumentation()
    panel.generate_stats(request, HttpResponse())
    assert panel.get_stats()["executions"] == []
    assert panel.nav_subtitle == "no pipeline"
    assert "No pipeline ran" in panel.content


# -- in a real browser ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _browser_tools() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if IN_CI:
            pytest.fail("chromium and chromium-driver are missing (scripts/test.sh installs "
                        "them)")
        pytest.skip("chromium and chromium-driver are not installed")  # not in CI
    return chromium, driver


@pytest.fixture
def example_server(tmp_path):
    """The example project on SQLite files of its own, with the toolbar, on a free port."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings",
           "DATAPIPE_EXAMPLE_DB": "", "DATAPIPE_EXAMPLE_VAR": str(tmp_path / "var"),
           "DJANGO_DEBUG": "1", "DATAPIPE_EXAMPLE_TOOLBAR": "1"}
    env.pop("DATAPIPE_TEST_DB_SUFFIX", None)
    manage = [sys.executable, "manage.py"]
    for alias in ("default", "archive"):
        subprocess.run([*manage, "migrate", f"--database={alias}", "--verbosity=0"], cwd=ROOT,
                       env=env, check=True, capture_output=True, timeout=120)
    subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    port = _free_port()
    server = subprocess.Popen([*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/payouts?limit=1", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_panel_opens_in_a_real_browser_on_the_example(example_server, tmp_path):
    chromium, driver = _browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1800,1800"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.set_page_load_timeout(30)
        browser.get(f"{example_server}/v1/payouts?limit=3&expand=user&total=true"
                    f"&status=processed")
        wait = WebDriverWait(browser, 20)
        # The toolbar lives in a shadow root (django-debug-toolbar's USE_SHADOW_DOM).
        root = wait.until(lambda b: b.find_element(By.ID, "djDebugRoot")).shadow_root
        link = wait.until(lambda b: root.find_element(By.CSS_SELECTOR,
                                                      "#djdt-DatapipePanel a.DatapipePanel"))
        browser.execute_script("arguments[0].scrollIntoView();", link)
        link.click()
        content = wait.until(lambda b: next(
            (e for e in root.find_elements(By.CSS_SELECTOR,
                                           "#DatapipePanel .djdt-datapipe-execution")
             if e.is_displayed()), None))
        time.sleep(0.3)  # let the panel lay out before the picture
        text = content.text
        target = Path(os.environ.get("DATAPIPE_SCREENSHOT") or tmp_path / "datapipe-panel.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(target))
    finally:
        browser.quit()
    assert "payouts · list" in text
    assert "counted on appdb+archive" in text  # the tiers' total
    assert "prefix" in text and "serves" in text  # the chain's plan per source
    assert "appdb" in text and "SELECT" in text and "merchant_id" in text
    assert "user" in text  # the enricher that ran
    assert "validate" in text and "fetch" in text  # stage timings
    assert target.stat().st_size > 10_000
