"""System checks over every registered pipeline (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import connections

from datapipe_django.registry import all_pipelines

__all__ = ["check_pipelines"]


@checks.register("datapipe_django")
def check_pipelines(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001: a fetcher names an unknown database alias. E002: the FilterSet's model is not the
    pipeline's model."""
    messages: list[checks.CheckMessage] = []
    for pipeline in all_pipelines():
        for fetcher in pipeline.fetchers:
            using = getattr(fetcher, "using", None)
            if using is not None and using not in connections.settings:
                messages.append(checks.Error(
                    f"Pipeline {pipeline.name!r}: fetcher {fetcher.name!r} uses database alias "
                    f"{using!r}, which is not in settings.DATABASES.",
                    hint="Add the alias to DATABASES or fix the fetcher's `using`.",
                    obj=pipeline, id="datapipe_django.E001",
                ))
        fs = pipeline.filterset_class
        fs_model = getattr(getattr(fs, "_meta", None), "model", None)
        if fs is not None and fs_model is not None and fs_model is not pipeline.model:
            messages.append(checks.Error(
                f"Pipeline {pipeline.name!r}: filterset_class {fs.__name__} filters "
                f"{fs_model._meta.label}, not the pipeline's model {pipeline.model._meta.label}.",
                hint="Use a FilterSet whose Meta.model is the pipeline's model.",
                obj=pipeline, id="datapipe_django.E002",
            ))
    return messages
