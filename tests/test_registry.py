"""``datapipe_django.registry``: pipelines by name, one per name."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django import Pipeline, registry
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item, Owner


def declare(name: str, model: type = Item) -> Pipeline:
    return Pipeline(name, model=model, fetchers=[InMemoryFetcher()])


@pytest.fixture
def names() -> list[str]:
    taken: list[str] = []
    yield taken
    for name in taken:
        registry.unregister(name)


def test_a_pipeline_registers_itself_by_name(names: list[str]) -> None:
    names.append("registry-a")
    pipeline = declare("registry-a")
    assert registry.get_pipeline("registry-a") is pipeline
    assert pipeline in registry.all_pipelines()
    registry.register(pipeline)  # the same object again is no conflict
    assert registry.get_pipeline("registry-a") is pipeline


def test_a_second_pipeline_of_the_same_name_is_refused(names: list[str]) -> None:
    names.append("registry-b")
    declare("registry-b")
    with pytest.raises(ImproperlyConfigured, match=r"'registry-b' is already registered "
                                                   r"\(model testapp.Item\)"):
        declare("registry-b", Owner)
    assert registry.get_pipeline("registry-b").model is Item


def test_register_false_keeps_a_pipeline_private() -> None:
    Pipeline("registry-private", model=Item, fetchers=[InMemoryFetcher()], register=False)
    with pytest.raises(KeyError, match="registry-private"):
        registry.get_pipeline("registry-private")


def test_an_unknown_name_lists_the_known_ones(names: list[str]) -> None:
    names.append("registry-c")
    declare("registry-c")
    with pytest.raises(KeyError) as info:
        registry.get_pipeline("nope")
    assert "'nope'" in str(info.value) and "registry-c" in str(info.value)


def test_all_pipelines_are_sorted_by_name_and_unregister_forgets(names: list[str]) -> None:
    names += ["registry-z", "registry-d"]
    declare("registry-z"), declare("registry-d")
    listed = [p.name for p in registry.all_pipelines()]
    assert listed == sorted(listed)
    registry.unregister("registry-z")
    registry.unregister("registry-z")  # absent: no error
    assert "registry-z" not in [p.name for p in registry.all_pipelines()]
