"""Specifications: one filter, three compilations.

A :class:`Spec` is a small immutable tree that says *which rows* a request wants, independently
of where the rows come from::

    Spec
    ├── leaves (one field path, one condition)
    │   ├── Eq(field, value)                       field = value          (exact)
    │   ├── IEq(field, value)                      UPPER(field) = UPPER(value)   (iexact)
    │   ├── In(field, values)                      field IN values; empty → nothing
    │   ├── Range(field, gt=, gte=, lt=, lte=)     open bounds
    │   ├── Contains / StartsWith / EndsWith(field, value, case_insensitive=False)
    │   └── IsNull(field, value=True)
    ├── composites: And(*children), Or(*children), Not(child)   (also ``&``, ``|``, ``~``)
    └── constants:  MatchAll() (neutral for ``&``), MatchNone() (neutral for ``|``)

Every spec compiles three ways, and the three agree on any data:

* :meth:`Spec.to_q` — a Django ``Q`` for any database alias;
* :meth:`Spec.to_search` — an Elasticsearch/OpenSearch query dict (no search client needed);
* :meth:`Spec.matches` — evaluated in memory on a model instance (or any object).

The in-memory semantics are SQL's, exactly as Django generates it: a comparison with NULL
never matches (``Eq("score", 1)`` is false for a NULL score), ``Not(child)`` matches iff
``child`` does not (Django adds ``IS NOT NULL`` inside negations, so ``~Q(score=1)`` keeps
NULL rows), ``In(field, [])`` matches nothing, a missing related row (NULL or dangling foreign
key) makes every condition on it false except ``IsNull(..., True)``, and values are prepared
with the model field's own ``get_prep_value`` (an ``IntegerField`` compared with
``Decimal("1.5")`` is compared with ``1``, a ``DateField`` with an aware datetime is compared
with its date in the default time zone). Case-insensitive lookups mirror PostgreSQL's
``UPPER()`` character by character.

:func:`spec_from_filterset` builds a spec from a bound, valid django-filter ``FilterSet`` by
doing exactly what ``FilterSet.filter_queryset`` would do; :func:`compile_filterset` binds
raw parameters first. A filter that cannot be expressed (a ``method=`` filter without a spec
hook, an unknown filter class, an unsupported lookup) raises :class:`Uncompilable`, which makes
a source decline the request instead of silently dropping the filter.

The package, one module per idea (it imports Django and django-filter only: no DRF, no
search client)::

    specs/
    ├── tree.py        the nodes and their combinators
    ├── paths.py       the one resolver of ``a__b__c`` field paths (used library-wide)
    ├── q.py           the ``Q`` compilation of a leaf (to-many paths as ``EXISTS``)
    ├── memory.py      the in-memory predicate: walking a path, preparing values
    ├── search.py      the search compilation (Elasticsearch/OpenSearch query dicts)
    ├── fieldmap.py    a search Document's mapping read as a FieldMap (fields and types)
    ├── filterset.py   FilterSet → Spec
    ├── binding.py     raw parameters bound to a FilterSet cheaply (no query, only the
    │                  filters named, form fields shared), then compiled: compile_filterset
    └── parameters.py  which parameters a FilterSet reads, which values a column holds
"""

from datapipe_django.specs.binding import (
    _NARROWING as _NARROWING,  # for the tests that look into the narrowing
)
from datapipe_django.specs.binding import (
    _narrowed as _narrowed,
)
from datapipe_django.specs.binding import compile_filterset
from datapipe_django.specs.filterset import (
    SUPPORTED_LOOKUPS,
    spec_from_filterset,
)
from datapipe_django.specs.filterset import (
    SpecHook as SpecHook,
)
from datapipe_django.specs.parameters import (
    check_parameters,
    check_value,
    filter_parameters,
    filterset_parameters,
)
from datapipe_django.specs.paths import model_field
from datapipe_django.specs.tree import (
    And,
    Contains,
    EndsWith,
    Eq,
    IEq,
    In,
    IsNull,
    Leaf,
    MatchAll,
    MatchNone,
    Not,
    Or,
    Range,
    Spec,
    StartsWith,
    Uncompilable,
)

__all__ = [
    "SUPPORTED_LOOKUPS",
    "And",
    "Contains",
    "EndsWith",
    "Eq",
    "IEq",
    "In",
    "IsNull",
    "Leaf",
    "MatchAll",
    "MatchNone",
    "Not",
    "Or",
    "Range",
    "Spec",
    "StartsWith",
    "Uncompilable",
    "check_parameters",
    "check_value",
    "compile_filterset",
    "filter_parameters",
    "filterset_parameters",
    "model_field",
    "spec_from_filterset",
]
