"""``datapipe_django.pinning``: read-your-writes. ``ReadYourWritesMiddleware`` pins a client that
wrote to the primary for ``PIN_AFTER_WRITE`` seconds through a signed cookie; ``use_primary``
pins a block. (What a pinned read does on the real standby: tests/test_replicas.py.)"""

from __future__ import annotations

import json
import time

from django.http import JsonResponse
from django.test import RequestFactory, override_settings

from datapipe_django.pinning import COOKIE_NAME, ReadYourWritesMiddleware, is_pinned


def _probe(request):
    return JsonResponse({"pinned": is_pinned()})


def pinned(response) -> bool:
    return json.loads(response.content)["pinned"]


def test_the_middleware_pins_a_client_that_wrote_for_pin_after_write_seconds():
    middleware = ReadYourWritesMiddleware(_probe)
    factory = RequestFactory()
    with override_settings(DATAPIPE={"PIN_AFTER_WRITE": 3.0}):
        assert pinned(middleware(factory.get("/"))) is False
        wrote = middleware(factory.post("/"))
        cookie = wrote.cookies[COOKIE_NAME]
        assert cookie["httponly"]
        follow = factory.get("/")
        follow.COOKIES[COOKIE_NAME] = cookie.value
        assert pinned(middleware(follow)) is True
        forged = factory.get("/")
        forged.COOKIES[COOKIE_NAME] = cookie.value[:-3] + "abc"
        assert pinned(middleware(forged)) is False
    time.sleep(0.3)
    with override_settings(DATAPIPE={"PIN_AFTER_WRITE": 0.2}):  # the same cookie, now too old
        assert pinned(middleware(follow)) is False
    assert not is_pinned()


def test_a_write_stamp_never_reads_as_written_in_the_future(monkeypatch):
    # 100.0006 would round to 100.001, ahead of a clock that then reads 100.0007.
    clock = iter([100.0006, 100.0007])
    monkeypatch.setattr("datapipe_django.pinning._clock", lambda: next(clock))
    middleware = ReadYourWritesMiddleware(_probe)
    factory = RequestFactory()
    with override_settings(DATAPIPE={"PIN_AFTER_WRITE": 3.0}):
        cookie = middleware(factory.post("/")).cookies[COOKIE_NAME]
        follow = factory.get("/")
        follow.COOKIES[COOKIE_NAME] = cookie.value
        assert pinned(middleware(follow)) is True
