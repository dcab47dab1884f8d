"""``datapipe_django._internal.wrapping``: a wrapper sees its object through a base class (its
own methods first, the base's defaults elsewhere, every other attribute the object's); and the
duck-typed fetcher and enricher built on it."""

from __future__ import annotations

import pytest

from datapipe_django._internal.wrapping import Wrapper, adopt_methods
from datapipe_django.enrichers import BaseEnricher, as_enricher
from datapipe_django.fetchers import BaseFetcher, as_fetcher


class Base:
    def greet(self):
        return "base"

    def part(self):
        return "base part"

    def __repr__(self):
        return "<Base>"


class Wrapped(Wrapper, Base):
    def __init__(self, obj):
        self.wrapped = obj
        adopt_methods(self, obj, ("greet", "part", "absent"))


class Plain:
    colour = "red"
    part = "not callable"

    def greet(self):
        return "own"

    def __repr__(self):
        return "<Plain>"


def test_own_methods_come_first_and_the_base_fills_in_the_rest():
    wrapper = Wrapped(Plain())
    assert wrapper.greet() == "own"
    assert wrapper.part() == "base part"  # its own `part` is no method: the base's is kept
    assert not hasattr(Base, "absent") and not hasattr(wrapper, "absent")


def test_every_other_attribute_and_the_repr_are_the_wrapped_objects():
    wrapper = Wrapped(Plain())
    assert wrapper.colour == "red" and repr(wrapper) == "<Plain>"
    with pytest.raises(AttributeError):
        wrapper.nothing  # noqa: B018
    bare = Wrapped.__new__(Wrapped)  # `wrapped` not set yet: an AttributeError, no recursion
    with pytest.raises(AttributeError, match="wrapped"):
        bare.colour  # noqa: B018


def test_a_duck_fetcher_and_enricher_are_seen_through_their_base():
    class Fetcher:
        name, tier = "duck", "cold"

        def can_handle(self, request):
            return True

        def fetch(self, request):
            return None

        def __repr__(self):
            return "<duck fetcher>"

    class Enricher:
        name, required, paths, owner = "e", False, ("e", "e.x"), "me"

        def can_enrich(self, auth_type):
            return True

        def enrich(self, items, context):
            pass

    fetcher = as_fetcher(Fetcher())
    assert isinstance(fetcher, BaseFetcher) and fetcher.tier == "cold"
    assert repr(fetcher) == "<duck fetcher>" and fetcher.count is not None
    enricher = as_enricher(Enricher())
    assert isinstance(enricher, BaseEnricher) and enricher.owner == "me"
    assert enricher.paths() == ("e", "e.x")
