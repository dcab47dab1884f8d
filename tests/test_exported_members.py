"""Every package's ``__all__`` is complete and sorted (as httpx's test_exported_members).

Complete: it holds every public name the package defines or imports from the library (a
submodule, or a name of the standard library or Django it uses, is not one it exports), each
resolving, and every name DESIGN §2 gives a user from it. Sorted: as ruff's RUF022 sorts
(isort-style: CONSTANTS, then Classes, then functions).
"""

from __future__ import annotations

import importlib
import types

import pytest

#: The names DESIGN §2 (the contract) imports from each package.
CONTRACT = {
    "datapipe_django": {"Pipeline", "FallbackMode", "PipelineRequest", "PipelineResult",
                        "State", "PipelineError", "ValidationFailed", "NoFetcher",
                        "SourcesUnavailable", "DeadlineExceeded", "EnrichmentFailed"},
    "datapipe_django.errors": {"PipelineError", "ValidationFailed", "NoFetcher",
                               "SourcesUnavailable", "DeadlineExceeded", "EnrichmentFailed"},
    "datapipe_django.fetchers": {"ORMFetcher", "SearchFetcher", "CachedFetcher", "FetchResult",
                                 "BaseFetcher", "Fetcher"},
    "datapipe_django.enrichers": {"PrefetchEnricher", "BatchEnricher", "BaseEnricher",
                                  "Enricher"},
    "datapipe_django.specs": {"Spec", "Eq", "In", "Range", "Contains", "IsNull",
                              "spec_from_filterset"},
    "datapipe_django.rest": {"PipelineViewSet", "ExpandableField"},
}

PACKAGES = [*CONTRACT, "datapipe_django.search", "datapipe_django.cache",
            "datapipe_django._internal"]


def public_names(module: types.ModuleType) -> set[str]:
    """What ``module``'s namespace offers of the library's: names not starting with ``_``,
    neither submodules nor objects of another package (``Any``, ``Mapping``...) nor the
    ``from __future__ import annotations`` feature."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
            and name not in ("annotations", "TYPE_CHECKING")
            and str(getattr(value, "__module__", "datapipe_django")).startswith("datapipe_django")}


def isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_complete_and_resolves(package):
    module = importlib.import_module(package)
    if not hasattr(module, "__all__"):  # a package that only documents its modules
        assert not public_names(module), f"{package} has public names and no __all__"
        return
    exported = list(module.__all__)
    assert exported == sorted(exported, key=isort_key), f"{package}.__all__ is not sorted"
    assert len(exported) == len(set(exported)), f"{package}.__all__ repeats a name"
    missing = public_names(module) - set(exported)
    assert not missing, f"{package} defines or imports {sorted(missing)}, not in __all__"
    unresolved = [name for name in exported if not hasattr(module, name)]
    assert not unresolved, f"{package}.__all__ names {unresolved}, which it lacks"


@pytest.mark.parametrize("package", sorted(CONTRACT))
def test_all_holds_every_contract_name(package):
    module = importlib.import_module(package)
    assert CONTRACT[package] <= set(module.__all__), sorted(CONTRACT[package] - set(module.__all__))
