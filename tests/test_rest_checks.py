"""W016: a routed PipelineViewSet over a tenant pipeline with no way to find the tenant is a
system-check warning, and logs one warning when it refuses requests for it."""

from __future__ import annotations

import logging

import pytest
from django.core.checks import run_checks
from django.test import override_settings
from django.urls import include, path
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIClient

from datapipe_django.rest import PipelineViewSet
from tests.testapp.pipelines import items
from tests.testapp.serializers import ItemSerializer
from tests.testapp.views import ItemViewSet


class ForgotTenantViewSet(PipelineViewSet):
    pipeline = items
    serializer_class = ItemSerializer


router = SimpleRouter(trailing_slash=False)
router.register("forgot", ForgotTenantViewSet, basename="forgot")
router.register("items", ItemViewSet, basename="item")
urlpatterns = [path("v1/", include(router.urls))]


def w016():
    return [m for m in run_checks(tags=["datapipe_django"]) if m.id == "datapipe_django.W016"]


def test_no_warning_for_the_test_urlconf_whose_viewsets_find_their_tenant():
    assert w016() == []


@override_settings(ROOT_URLCONF=__name__)
def test_w016_names_the_viewset_the_pipeline_and_the_fix():
    [message] = w016()
    assert "ForgotTenantViewSet" in message.msg and repr(items.name) in message.msg
    assert "get_tenant()" in message.hint
    assert message.obj is ForgotTenantViewSet


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_the_refusal_is_logged_once(caplog):
    client = APIClient()
    with caplog.at_level(logging.WARNING, logger="datapipe_django.rest"):
        assert client.get("/v1/forgot").status_code == 403
        assert client.get("/v1/forgot/1").status_code == 403
        assert client.get("/v1/items").status_code == 403  # overrides get_tenant: no warning
    warnings = [r for r in caplog.records if "get_tenant()" in r.getMessage()]
    assert len(warnings) == 1
    assert "ForgotTenantViewSet" in warnings[0].getMessage()
