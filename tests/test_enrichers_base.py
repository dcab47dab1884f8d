"""BaseEnricher's declarations: a name, auth types as a collection, a dotted path below an
enricher of its parent path, what each caller may expand; and ``CompositeEnricher`` still
importable from its old home (kept for one release). The composite's own tests are in
``tests/test_enrichers_composite.py``."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from datapipe_django.enrichers import BaseEnricher
from tests.test_enrichers_composite import Sleepy, context, make


def test_a_dotted_enricher_needs_one_for_its_parent_path():
    with pytest.raises(ImproperlyConfigured, match=r"'a\.b' expands below 'a'"):
        make([Sleepy("a.b")])


def test_expandable_paths_hide_what_sits_below_a_forbidden_parent():
    p = make([Sleepy("a", auth_types={"private"}), Sleepy("a.b"), Sleepy("c"),
              Sleepy("k", always=True)])
    assert p.expandable("public") == {"c", "k"}
    assert p.expandable("private") == {"a", "a.b", "c", "k"}


def test_enricher_declarations_are_checked():
    with pytest.raises(ImproperlyConfigured, match="collection of auth types"):
        Sleepy("a", auth_types="private")
    with pytest.raises(ImproperlyConfigured, match="give the enricher a name"):
        BaseEnricher()
    with pytest.raises(NotImplementedError, match="must implement enrich"):
        BaseEnricher("x").enrich([], context())


def test_composite_enricher_is_still_importable_from_enrichers_base():
    from datapipe_django.enrichers import base, composite

    assert base.CompositeEnricher is composite.CompositeEnricher
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        base.Nothing  # noqa: B018
