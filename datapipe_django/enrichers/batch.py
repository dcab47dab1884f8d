"""`BatchEnricher`: data from a service, loaded in batches with DataLoader semantics."""

from __future__ import annotations

import json
import logging
import math
import operator
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from django.core import checks
from django.core.cache import caches
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured

from datapipe_django._internal.breaker import Breaker, TimedProbe
from datapipe_django.cache.guard import get_guard, unknown_cache_alias
from datapipe_django.cache.keys import Uncacheable, digest, slug
from datapipe_django.cache.stats import CacheStats
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers.base import BaseEnricher, EnrichContext
from datapipe_django.errors import DeadlineExceeded
from datapipe_django.executor import Scheduler
from datapipe_django.executor import submit as pool_submit

__all__ = ["BatchEnricher", "ServiceUnavailable", "run_chunks"]

logger = logging.getLogger("datapipe_django.enrichers")

#: The breaker of a service logs where every breaker of the library always has.
_breaker_logger = logging.getLogger("datapipe_django.cache")

#: Bumped when the format of cached enrichment values changes.
ENRICH_CACHE_FORMAT = 1


class BatchEnricher(BaseEnricher):
    """Sets attribute ``name`` on every item to ``load(keys)[key(item)]`` (None where missing).

    ``key`` is an attribute name (``"transaction_id"``) or a callable ``(item) -> key``.
    ``load(keys)`` takes a list of keys and returns a mapping ``{key: value}``; give the
    function a ``requires_context = True`` attribute (as DRF does for validators) to be called
    ``load(keys, context)`` instead, with the :class:`EnrichContext` (``remaining`` seconds to
    use as the call's timeout, ``tenant``, ``auth_type``).

    DataLoader semantics, per request: keys are de-duplicated and ``None`` keys skipped; the
    keys are sent in chunks of ``batch_size``, up to ``max_workers`` chunks at once (default:
    the enricher's share of the pipeline's ``max_workers``); results are memoised for the
    current request only (``context.memo``, never across requests or tenants); a key missing
    from the answer gives None; an exception is the enricher's failure (reported in ``errors``
    or, when ``required``, a 502).
    """

    def __init__(
        self,
        name: str,
        *,
        key: str | Callable[[Any], Any],
        load: Callable[..., Mapping[Any, Any]],
        auth_types: Iterable[str] | None = None,
        required: bool = False,
        always: bool = False,
        batch_size: int = 100,
        max_workers: int | None = None,
        cache_ttl: float | None = None,
        cache: str | None = None,
        cache_version: Any = None,
    ) -> None:
        super().__init__(name, auth_types=auth_types, required=required, always=always)
        owner = f"BatchEnricher({name!r})"
        _check_arguments(owner, self.name, load=load, batch_size=batch_size,
                         max_workers=max_workers, cache_ttl=cache_ttl)
        self.key, self.key_attr = _key_getter(owner, key)
        self.loader = load
        #: Opens when a call of ``load`` fails: for ``ENRICH_BREAKER_SECONDS`` the enricher
        #: fails at once (``unavailable``) instead of waiting on a service that is down or
        #: frozen; then one call probes it.
        self.breaker = Breaker(self.name, TimedProbe(_enrich_breaker_seconds),
                               label="The service of BatchEnricher", logger=_breaker_logger)
        # Enrichers with the same `load` share its memo within a request (bound methods of
        # one object compare equal; anything unhashable memoises on its own).
        self._memo_key: Hashable = load if _hashable(load) else id(load)
        self.batch_size = batch_size
        self.max_workers = max_workers
        self.cache_ttl = cache_ttl
        self._cache = cache
        self.cache_version = cache_version
        self.stats = CacheStats()
        self._warned = False

    @property
    def cache_alias(self) -> str:
        return self._cache or str(datapipe_settings.CACHE)

    def check(self, pipeline: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = []
        try:
            pipeline.model._meta.get_field(self.name)
        except FieldDoesNotExist:
            pass
        else:
            messages.append(checks.Error(
                f"Pipeline {pipeline.name!r}: BatchEnricher({self.name!r}) would overwrite the "
                f"field {self.name!r} of {pipeline.model._meta.label}.",
                hint="Name the enricher after the attribute to add, e.g. 'transaction' for "
                     "key='transaction_id'.",
                obj=pipeline, id="datapipe_django.E013",
            ))
        if self.cache_ttl is not None:
            error = unknown_cache_alias(pipeline, f"BatchEnricher({self.name!r})",
                                        self.cache_alias)
            if error is not None:
                messages.append(error)
        return messages

    def needs(self, model: type[Any]) -> frozenset[str] | None:
        """The key's field when ``key`` names a model field (by name or attname); None (every
        field) for a callable key or any other attribute."""
        if self.key_attr is None:
            return None
        for field in model._meta.concrete_fields:
            if self.key_attr in (field.name, field.attname):
                return frozenset({field.name})
        return None

    def runs_inline(self, items: list[Any], context: EnrichContext) -> bool:
        return False  # a service call: no database transaction to see

    # -- DataLoader ---------------------------------------------------------------------------
    def keys(self, items: Iterable[Any]) -> list[Any]:
        """The distinct non-None keys of ``items``, in first-seen order."""
        seen: dict[Any, None] = {}
        for item in items:
            value = self.key(item)
            if value is not None:
                seen.setdefault(value, None)
        return list(seen)

    def load_many(self, keys: Sequence[Hashable], context: EnrichContext) -> dict[Any, Any]:
        """``{key: value or None}`` for ``keys``: memoised per request, read from the cache
        (with ``cache_ttl``), the rest loaded in chunks."""
        memo: dict[Any, Any] = context.memo.setdefault(("batch", self._memo_key), {})
        missing = [k for k in dict.fromkeys(keys) if k not in memo]
        if missing and self.cache_ttl:
            self._load_through_cache(memo, missing, context)
        else:
            self._load_into(memo, missing, context)
        return {k: memo.get(k) for k in keys}

    def _load_through_cache(self, memo: dict[Any, Any], keys: list[Any],
                            context: EnrichContext) -> None:
        """Fill ``memo`` from the cache, then from ``load`` for the rest, which is cached."""
        cache_keys = self._cache_keys(keys, context)
        missing = self._read_cache(cache_keys, keys, memo) if cache_keys else keys
        self._load_into(memo, missing, context)
        if cache_keys and missing:
            self._write_cache({cache_keys[k]: memo[k] for k in missing if k in cache_keys})

    def _load_into(self, memo: dict[Any, Any], keys: list[Any], context: EnrichContext
                   ) -> None:
        """Call ``load`` for ``keys`` in chunks of ``batch_size`` (None for a key missing from
        its answer)."""
        chunks = [keys[i : i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        workers = self.max_workers or max(1, context.workers)
        answers = run_chunks(lambda c: self._call(c, context), chunks, workers=workers,
                             context=context)
        for chunk, answer in zip(chunks, answers, strict=True):
            for k in chunk:
                memo[k] = answer.get(k)

    # -- the cache across requests ------------------------------------------------------------
    def _cache_keys(self, keys: list[Any], context: EnrichContext) -> dict[Any, str]:
        try:
            scope = digest([context.pipeline, self.name, self.cache_version, context.tenant,
                            context.auth_type], size=24)
        except Uncacheable:
            self._warn(f"the tenant {context.tenant!r} cannot be part of a cache key")
            return {}
        prefix = (f"{datapipe_settings.CACHE_KEY_PREFIX}:enrich{ENRICH_CACHE_FORMAT}:"
                  f"{slug(context.pipeline)}:{slug(self.name)}:{scope}")
        result = {}
        for key in keys:
            if type(key) is int:  # the common case, spelled out: no hashing needed
                result[key] = f"{prefix}:i{key}"
                continue
            try:
                result[key] = f"{prefix}:{digest(key, size=32)}"
            except Uncacheable:
                self._warn(f"keys like {key!r} cannot be part of a cache key")
        return result

    def _read_cache(self, cache_keys: dict[Any, str], missing: list[Any],
                    memo: dict[Any, Any]) -> list[Any]:
        """Fill ``memo`` from the cache; the keys still to load from the service."""
        guard = get_guard(self.cache_alias)
        if not guard.allow():
            self.stats.incr("bypasses")
            return missing
        try:
            found = caches[self.cache_alias].get_many(list(cache_keys.values()))
        except Exception as exc:
            self._cache_failed(guard, exc)
            self.stats.incr("bypasses")
            return missing
        guard.succeeded()
        rest = []
        for key in missing:
            raw = found.get(cache_keys.get(key, ""))
            if raw is None:
                rest.append(key)
                self.stats.incr("misses")
            else:
                memo[key] = json.loads(raw)
                self.stats.incr("hits")
        return rest

    def _write_cache(self, entries: dict[str, Any]) -> None:
        payloads = {}
        for cache_key, value in entries.items():
            if _is_json(value):
                payloads[cache_key] = json.dumps(value, separators=(",", ":"))
            else:
                self._warn(f"a value of type {type(value).__name__} is not JSON")
        guard = get_guard(self.cache_alias)
        if not payloads or not guard.allow():
            return
        try:
            caches[self.cache_alias].set_many(payloads, timeout=math.ceil(self.cache_ttl or 1))
        except Exception as exc:
            self._cache_failed(guard, exc)
        else:
            guard.succeeded()

    def _cache_failed(self, guard: Any, exc: Exception) -> None:
        guard.absorb(exc)
        self.stats.incr("errors")

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("BatchEnricher(%r): %s, so those values are loaded on every "
                           "request, not cached.", self.name, what)

    def _call(self, chunk: list[Any], context: EnrichContext) -> Mapping[Any, Any]:
        breaker = self.breaker
        if float(datapipe_settings.ENRICH_BREAKER_SECONDS) > 0 and not breaker.allow():
            raise ServiceUnavailable(
                f"BatchEnricher({self.name!r}): its service failed a moment ago "
                f"({breaker.last_error}); not called until ENRICH_BREAKER_SECONDS pass.")
        started = time.monotonic()
        try:
            if getattr(self.loader, "requires_context", False):
                answer = self.loader(chunk, context)
            else:
                answer = self.loader(chunk)
        except _BUGS:
            breaker.release_probe()
            raise
        except Exception as exc:
            # The service is down, refused or timed out (a frozen one: when this call's own
            # timeout ends, after the request that made it gave up at its deadline). A call
            # that started before the service last answered says nothing new: it was made
            # while it was down.
            if started >= breaker.last_success:
                breaker.failed(exc)
            else:
                breaker.release_probe()
            raise
        breaker.succeeded()
        if not isinstance(answer, Mapping):
            raise TypeError(f"BatchEnricher({self.name!r}): load() returned "
                            f"{type(answer).__name__}, not a mapping {{key: value}}.")
        return answer

    # -- two phases ---------------------------------------------------------------------------
    def load(self, items: list[Any], context: EnrichContext) -> dict[Any, Any]:
        return self.load_many(self.keys(items), context)

    def apply(self, items: list[Any], loaded: dict[Any, Any], context: EnrichContext) -> None:
        for item in items:
            value = self.key(item)
            setattr(item, self.name, loaded.get(value) if value is not None else None)


def _enrich_breaker_seconds() -> float:
    return float(datapipe_settings.ENRICH_BREAKER_SECONDS)


def _key_getter(owner: str, key: Any) -> tuple[Callable[[Any], Any], str | None]:
    """``key`` as ``(item) -> key`` and the attribute it reads (None for a callable)."""
    if isinstance(key, str):
        return operator.attrgetter(key), key
    if callable(key):
        return key, None
    raise ImproperlyConfigured(f"{owner}: `key` must be an attribute name or a callable "
                               f"(item) -> key.")


def _check_arguments(owner: str, name: str, *, load: Any, batch_size: Any, max_workers: Any,
                     cache_ttl: Any) -> None:
    """``ImproperlyConfigured`` naming the first argument of ``BatchEnricher`` that is wrong."""
    problems = (
        ("." in name, "the name is the attribute set on each item; it cannot contain dots."),
        (not callable(load), "`load` must be a callable (keys) -> {key: value}."),
        (not _whole(batch_size) or batch_size < 1,
         "`batch_size` must be a positive whole number."),
        (max_workers is not None and max_workers < 1, "`max_workers` must be at least 1."),
        (cache_ttl is not None and not _positive_seconds(cache_ttl),
         f"`cache_ttl` must be positive seconds, got {cache_ttl!r}."),
    )
    for wrong, message in problems:
        if wrong:
            raise ImproperlyConfigured(f"{owner}: {message}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


#: A loader's own mistakes: they fail its call, never open its breaker.
_BUGS = (ImproperlyConfigured, TypeError, AttributeError, NameError, LookupError, ValueError,
         AssertionError)


class ServiceUnavailable(Exception):
    """A ``BatchEnricher``'s service is skipped: it failed a moment ago (reported with the
    code ``unavailable``)."""

    code = "unavailable"


def _is_json(value: Any) -> bool:
    """Whether ``value`` comes back from a JSON round trip as it is (same types)."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int | float):
        return type(value) in (int, float) and math.isfinite(value)
    if type(value) is list:
        return all(_is_json(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    return False


def run_chunks(
    fn: Callable[[Any], Any], chunks: Sequence[Any], *, workers: int, context: EnrichContext,
    submit: Callable[..., Future[Any]] = pool_submit,
) -> list[Any]:
    """``[fn(c) for c in chunks]`` with up to ``workers`` calls at once, on the shared pool and
    on this thread, within ``context``'s deadline (``DeadlineExceeded`` when it passes).

    This thread works too: it runs the next waiting chunk itself, and takes back a submitted
    chunk that no pool thread has started, so a busy pool slows the batch down but can never
    deadlock it.
    """
    if workers <= 1 or len(chunks) <= 1:
        results = []
        for chunk in chunks:
            if context.remaining == 0.0:
                raise _late()
            results.append(fn(chunk))
        return results
    return _ChunkRun(fn, chunks, workers, context, submit).run()


class _ChunkRun:
    """One :func:`run_chunks` call on the pool: the chunks still queued, the results so far."""

    def __init__(self, fn: Callable[[Any], Any], chunks: Sequence[Any], workers: int,
                 context: EnrichContext, submit: Callable[..., Future[Any]]) -> None:
        self.fn, self.chunks, self.workers, self.context = fn, chunks, workers, context
        self.results: list[Any] = [None] * len(chunks)
        self.queue = list(range(len(chunks)))
        self.scheduler: Scheduler[int] = Scheduler(context.deadline, submit)

    def run(self) -> list[Any]:
        try:
            while self.queue or self.scheduler.running:
                self._start_pool_share()
                if not self._run_own_share():
                    self._collect()
        except BaseException:
            self.scheduler.abandon()
            raise
        return self.results

    def _start_pool_share(self) -> None:
        while len(self.queue) > 1 and self.scheduler.running < self.workers - 1:
            i = self.queue.pop(0)  # one chunk stays for this thread
            self.scheduler.start(i, self.fn, self.chunks[i])

    def _run_own_share(self) -> bool:
        """Run this thread's share: the next waiting chunk, else what no pool thread has
        picked up yet. Nothing interrupts it: past the deadline with work still outstanding,
        the batch is abandoned, whatever the pool threads did meanwhile. Whether it ran any."""
        queue, scheduler, remaining = self.queue, self.scheduler, lambda: self.context.remaining
        mine = [queue.pop(0)] if queue else [i for i, _, _ in scheduler.take_back()]
        for n, i in enumerate(mine):
            if remaining() == 0.0:
                raise _late()
            self.results[i] = self.fn(self.chunks[i])
            if remaining() == 0.0 and (queue or scheduler.running or mine[n + 1:]):
                raise _late()
        return bool(mine)

    def _collect(self) -> None:
        finished = self.scheduler.wait()
        if not finished:
            raise _late()
        for i, future in finished:
            self.results[i] = future.result()


def _late() -> DeadlineExceeded:
    return DeadlineExceeded("The deadline passed before every batch was loaded.")
