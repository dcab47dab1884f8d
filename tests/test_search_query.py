"""``datapipe_django.search.query``, the re-export shim kept for one release (the compiler is
tested in tests/test_specs_search.py, the body in tests/test_search_body.py)."""

from __future__ import annotations


def test_search_query_still_exports_what_it_did_from_the_new_homes() -> None:
    """``datapipe_django.search.query`` is a re-export shim kept for one release: every name it
    exported is the very object of its new module."""
    import datapipe_django.search.body as body
    import datapipe_django.search.query as query
    import datapipe_django.specs.search as compiler

    old_names = {"EngineField", "FieldMap", "NotSearchable", "compile_spec", "facet_aggregations",
                 "facet_buckets", "highlight_clause", "multi_match", "search_after",
                 "search_body", "sort_clause"}
    assert old_names <= set(query.__all__)
    for name in query.__all__:
        home = body if hasattr(body, name) and name in body.__all__ else compiler
        assert getattr(query, name) is getattr(home, name), name
