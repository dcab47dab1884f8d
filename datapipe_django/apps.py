from __future__ import annotations

from django.apps import AppConfig
from django.apps import apps as django_apps
from django.utils.module_loading import autodiscover_modules


class DatapipeConfig(AppConfig):
    name = "datapipe_django"
    verbose_name = "datapipe"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        if django_apps.is_installed("drf_spectacular"):
            # OpenAPI for PipelineViewSet: drf-spectacular finds extensions once imported.
            from datapipe_django.rest import schema  # noqa: F401
        from datapipe_django import checks  # noqa: F401  (registers the system checks)

        # Import every installed app's `pipelines` module, as the admin imports `admin.py`:
        # pipelines register by name, and a cached one watches its model for writes in every
        # process (a worker or a management command that writes must invalidate too).
        autodiscover_modules("pipelines")
