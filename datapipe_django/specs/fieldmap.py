"""The engine's fields: a search Document's mapping read once, as a :class:`FieldMap`.

Field names for the search compilation (:mod:`datapipe_django.specs.search`) come from a
:class:`FieldMap`. Without one, ``owner__name`` is ``owner.name``.
Built from a Document's mapping (what :class:`~datapipe_django.fetchers.SearchFetcher` does),
it picks each field's *exact-value* field for filters and sorts (a ``keyword`` sub-field of an
analyzed ``text`` field), its ``text`` field for ``q``, finds a foreign key stored as
``category``, ``category.id`` or ``category_id``, and knows each field's type, which decides how
cursor values and integer bounds are written. A filter the mapping cannot serve exactly (a
field that is only analyzed text, a normalised keyword, a field missing from the mapping)
raises :class:`NotSearchable`, so the search source declines the request instead of
answering it differently from the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldError
from django.db import models

from datapipe_django.specs.memory import prepare
from datapipe_django.specs.paths import resolve
from datapipe_django.specs.tree import Uncompilable

__all__ = [
    "CONTAINER_TYPES",
    "FLOAT_TYPES",
    "INTEGER_RANGES",
    "KEYWORD_TYPES",
    "TEXT_TYPES",
    "EngineField",
    "FieldMap",
    "NotSearchable",
]


#: Integer field types and the values they hold (bounds outside are handled like Django).
INTEGER_RANGES = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
    "unsigned_long": (0, 2**64 - 1),
}
FLOAT_TYPES = frozenset({"float", "half_float", "double", "scaled_float"})
KEYWORD_TYPES = frozenset({"keyword", "constant_keyword", "wildcard"})
TEXT_TYPES = frozenset({"text", "match_only_text", "search_as_you_type"})
CONTAINER_TYPES = frozenset({"object", "nested", "flattened"})

# A guess of the engine type from the Django field, when no mapping is known.
_DJANGO_TYPES = {
    "AutoField": "integer", "SmallAutoField": "short", "BigAutoField": "long",
    "IntegerField": "integer", "PositiveIntegerField": "integer",
    "SmallIntegerField": "short", "PositiveSmallIntegerField": "short",
    "BigIntegerField": "long", "PositiveBigIntegerField": "long",
    "FloatField": "double", "DecimalField": "double", "BooleanField": "boolean",
    "DateTimeField": "date", "DateField": "date",
    "CharField": "keyword", "TextField": "keyword", "SlugField": "keyword",
    "EmailField": "keyword", "URLField": "keyword", "UUIDField": "keyword",
    "GenericIPAddressField": "ip",
}


class NotSearchable(Uncompilable):
    """A spec, ordering or search cannot be expressed exactly on the engine.

    ``field`` is the field path concerned (or None). A :class:`SearchFetcher
    <datapipe_django.fetchers.SearchFetcher>` declines such a request, with ``reason``.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(None, reason)
        self.field = field

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class EngineField:
    """Where a Django field path lives in the engine: the (dotted) field name and its mapping
    type (``"keyword"``, ``"long"``, ``"date_nanos"``...; None when unknown)."""

    name: str
    type: str | None = None


def _flatten(properties: Mapping[str, Any], prefix: str = "", nested: bool = False,
             out: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{"owner": {"properties": {"name": ...}}}`` → ``{"owner": ..., "owner.name": ...}``,
    sub-fields (``fields``) included as ``name.sub``."""
    out = {} if out is None else out
    for name, spec in properties.items():
        full = f"{prefix}{name}"
        kind = spec.get("type") or ("object" if "properties" in spec else None)
        out[full] = {**spec, "type": kind, "_nested": nested}
        if "properties" in spec:
            _flatten(spec["properties"], f"{full}.", nested or kind == "nested", out)
        for sub, sub_spec in (spec.get("fields") or {}).items():
            out[f"{full}.{sub}"] = {**sub_spec, "type": sub_spec.get("type"),
                                    "_nested": nested, "_sub": True}
    return out


class FieldMap:
    """Field names and types of the engine's documents, for one model.

    ``mapping`` is a Document's mapping (``{"properties": {...}}``, as
    ``Document._doc_type.mapping.to_dict()`` gives it); ``model`` the Django model, used to
    find foreign keys and to prepare values exactly as ``Spec.matches()`` does; ``names``
    overrides the engine name of given paths (``{"owner__name": "owner_name"}``).
    """

    def __init__(self, mapping: Mapping[str, Any] | None = None, *,
                 model: type[models.Model] | None = None,
                 names: Mapping[str, str] | None = None,
                 normalizers: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.names = dict(names or {})
        self.normalizers = dict(normalizers or {})
        if mapping is not None and "properties" in mapping:
            mapping = mapping["properties"]
        self.flat: dict[str, dict[str, Any]] | None = (
            _flatten(mapping) if mapping is not None else None)

    @classmethod
    def coerce(cls, fields: Any, model: type[models.Model] | None = None) -> FieldMap:
        """A FieldMap from ``fields``: a FieldMap, a mapping of path → engine name, or None."""
        if isinstance(fields, FieldMap):
            return fields
        if fields is None:
            return cls(model=model)
        if isinstance(fields, Mapping):
            return cls(model=model, names=fields)
        raise TypeError(f"fields must be a FieldMap or a mapping of names, not {fields!r}.")

    # -- model side -----------------------------------------------------------------------
    def model_field(self, path: str) -> Any:
        """The model field whose values ``path`` compares (None without a model)."""
        if self.model is None:
            return None
        try:
            return resolve(self.model, path)[1]
        except FieldError:
            return None

    def prepare(self, path: str, lookup: str, value: Any) -> Any:
        """``value`` as the model field prepares it for ``lookup`` (as ``matches()`` does)."""
        field = self.model_field(path)
        return value if field is None else prepare(field, lookup, value)

    def candidates(self, path: str) -> list[str]:
        """Engine names ``path`` may have, most likely first."""
        if path in self.names:
            return [self.names[path]]
        parts = path.split("__")
        if parts == ["pk"] and self.model is not None:
            parts = [self.model._meta.pk.name]  # type: ignore[union-attr]
        found = [".".join(parts), *self._key_candidates(path)]
        return list(dict.fromkeys(found))

    def _key_candidates(self, path: str) -> list[str]:
        """Where a path that reads a foreign key column may be stored: as the key itself, as
        an object holding the related row's key, or under the column's name."""
        if self.model is None:
            return []
        try:
            steps, final = resolve(self.model, path)
        except FieldError:
            return []
        if not steps or steps[-1].kind != "value" or steps[-1].name == steps[-1].attname:
            return []
        prefix = "".join(f"{s.name}." for s in steps[:-1])
        last = steps[-1]
        related: Any = final
        target = related.target_field.name if getattr(related, "is_relation", False) \
            else getattr(related, "name", "id")
        return [f"{prefix}{last.name}", f"{prefix}{last.name}.{target}",
                f"{prefix}{last.attname}"]

    def _guess_type(self, path: str) -> str | None:
        field = self.model_field(path)
        if field is None:
            return None
        if field.is_relation:
            field = getattr(field, "target_field", field)
        return _DJANGO_TYPES.get(field.get_internal_type())

    # -- engine side ----------------------------------------------------------------------
    def filter_field(self, path: str) -> EngineField:
        """The field exact filters and sorts use (a keyword sub-field of analyzed text)."""
        candidates = self.candidates(path)
        if self.flat is None:
            return EngineField(candidates[0], self._guess_type(path))
        text_only: str | None = None
        for name in candidates:
            spec = self.flat.get(name)
            if spec is None or spec["type"] in ("object", "flattened"):
                continue
            found = _exact_field(path, name, spec)
            if found is not None:
                return found
            text_only = text_only or name
        if text_only is not None:
            raise NotSearchable(
                f"{text_only!r} is analyzed text: give it a keyword sub-field to filter or sort "
                f"by {path!r} (e.g. fields={{'raw': KeywordField()}}).", field=path)
        raise NotSearchable(f"{path!r} is not in the Document's mapping (looked for "
                            f"{', '.join(map(repr, candidates))}).", field=path)

    def exists_field(self, path: str) -> EngineField:
        """The field an ``exists`` query checks (any indexed field, analyzed text included)."""
        try:
            return self.filter_field(path)
        except NotSearchable:
            if self.flat is None:
                raise
            for name in self.candidates(path):
                spec = self.flat.get(name)
                if spec is not None and spec["type"] in TEXT_TYPES and not spec["_nested"]:
                    return EngineField(name, spec["type"])
            raise

    def folding(self, normalizer: str | None) -> str | None:
        """``"lowercase"``/``"uppercase"`` when ``normalizer`` only folds case, else None."""
        if not normalizer:
            return None
        definition = self.normalizers.get(normalizer)
        if definition is None:
            return "lowercase" if normalizer == "lowercase" else None  # the built-in one
        if definition.get("char_filter") or definition.get("type", "custom") != "custom":
            return None
        filters = list(definition.get("filter") or [])
        return filters[0] if filters in (["lowercase"], ["uppercase"]) else None

    def folded_field(self, path: str) -> tuple[EngineField, str] | None:
        """A keyword field of ``path`` whose normalizer folds case (what case-insensitive
        lookups use), with the folding; None when the mapping has none."""
        if self.flat is None:
            return None
        for name in self.candidates(path):
            spec = self.flat.get(name)
            if spec is None or spec["_nested"]:
                continue
            options = [(name, spec)] + [(f"{name}.{sub}", sub_spec) for sub, sub_spec in
                                        (spec.get("fields") or {}).items()]
            for full, option in options:
                kind = self.folding(option.get("normalizer"))
                if option.get("type") in KEYWORD_TYPES and kind is not None:
                    return EngineField(full, option["type"]), kind
        return None

    def search_field(self, path: str) -> str:
        """The field ``q`` searches: analyzed text (a text sub-field of a keyword)."""
        candidates = self.candidates(path)
        if self.flat is None:
            return candidates[0]
        for name in candidates:
            spec = self.flat.get(name)
            if spec is None or spec["type"] in CONTAINER_TYPES or spec["_nested"]:
                continue
            if spec["type"] in TEXT_TYPES:
                return name
            sub = _subfield(spec, TEXT_TYPES)
            return f"{name}.{sub[0]}" if sub is not None else name
        raise NotSearchable(f"search field {path!r} is not in the Document's mapping (looked "
                            f"for {', '.join(map(repr, candidates))}).", field=path)


def _exact_field(path: str, name: str, spec: Mapping[str, Any]) -> EngineField | None:
    """The exact-value field of the mapped field ``name`` (itself, or the keyword sub-field of
    analyzed text); None when it is analyzed text only. Raises :class:`NotSearchable` for a
    field inside a nested one and for a normalised keyword."""
    if spec["_nested"] or spec["type"] == "nested":
        raise NotSearchable(f"{name!r} is inside a nested field; the spec compiles to "
                            f"plain queries only (map it as an object).", field=path)
    if spec["type"] in TEXT_TYPES:
        sub = _subfield(spec, KEYWORD_TYPES, plain=True)
        if sub is None:
            return None
        name, spec = f"{name}.{sub[0]}", sub[1]
    if spec["type"] in KEYWORD_TYPES and spec.get("normalizer"):
        raise NotSearchable(
            f"{name!r} is a keyword with the normalizer {spec['normalizer']!r}, so an "
            f"exact filter on {path!r} would not be exact; map it without one.",
            field=path)
    return EngineField(name, spec["type"])


def _subfield(spec: Mapping[str, Any], types: Iterable[str], *,
              plain: bool = False) -> tuple[str, dict[str, Any]] | None:
    """The first sub-field of ``spec`` of one of ``types`` (``plain``: without normalizer
    first)."""
    subs = [(name, sub) for name, sub in (spec.get("fields") or {}).items()
            if sub.get("type") in types]
    if plain:
        subs.sort(key=lambda pair: bool(pair[1].get("normalizer")))
    return subs[0] if subs else None
