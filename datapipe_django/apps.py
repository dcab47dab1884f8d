from __future__ import annotations

from django.apps import AppConfig


class DatapipeConfig(AppConfig):
    name = "datapipe_django"
    verbose_name = "datapipe"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from datapipe_django import checks  # noqa: F401  (registers the system checks)
