"""The enricher protocol and `CompositeEnricher`, which runs a page's enrichers.

An enricher is any object with ``name``, ``required``, ``can_enrich(auth_type)`` and
``enrich(items, context)``. It runs when its name (or a dotted path below it) is in the
request's ``expand``, or always when declared ``always=True``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from datapipe_django.errors import DeadlineExceeded, EnrichmentFailed, PipelineError
from datapipe_django.executor import submit

__all__ = ["BaseEnricher", "CompositeEnricher", "EnrichContext", "Enricher"]


@dataclass(frozen=True)
class EnrichContext:
    """What an enricher knows about the request (never an HTTP object)."""

    pipeline: str
    expand: frozenset[str]
    auth_type: str | None = None
    tenant: Any = None
    deadline: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


@runtime_checkable
class Enricher(Protocol):
    name: str
    required: bool

    def can_enrich(self, auth_type: str | None) -> bool: ...

    def enrich(self, items: list[Any], context: EnrichContext) -> None: ...


class BaseEnricher:
    """Base class for enrichers.

    ``auth_types``: the caller auth types allowed to expand it (None: every caller).
    ``required``: its failure fails the request (502) instead of being reported in ``errors``.
    ``always``: runs without being asked for in ``expand``.
    """

    name: str = ""
    required: bool = False
    always: bool = False
    auth_types: frozenset[str] | None = None

    def __init__(
        self,
        name: str | None = None,
        *,
        auth_types: Iterable[str] | None = None,
        required: bool = False,
        always: bool = False,
    ) -> None:
        if name is not None:
            self.name = name
        self.auth_types = frozenset(auth_types) if auth_types is not None else None
        self.required = required
        self.always = always

    def can_enrich(self, auth_type: str | None) -> bool:
        """Whether a caller of ``auth_type`` may have this expansion."""
        return self.auth_types is None or auth_type in self.auth_types

    def enrich(self, items: list[Any], context: EnrichContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement enrich(items, context).")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class CompositeEnricher:
    """Runs the selected enrichers of a page, sequentially or on the shared pool.

    One deadline: enrichers still running when it passes are abandoned; an optional one is
    reported in the returned errors, a required one raises :class:`DeadlineExceeded`.
    """

    def __init__(
        self, enrichers: Sequence[Any], *, parallel: bool = False, max_workers: int = 5
    ) -> None:
        self.enrichers = list(enrichers)
        self.parallel = parallel
        self.max_workers = max_workers

    def select(self, expand: frozenset[str], auth_type: str | None) -> list[Any]:
        """The enrichers a request runs: asked for (or ``always``) and allowed for the caller."""
        return [
            e for e in self.enrichers
            if (getattr(e, "always", False) or e.name in expand) and e.can_enrich(auth_type)
        ]

    def run(self, items: list[Any], context: EnrichContext,
            selected: Sequence[Any]) -> list[dict[str, Any]]:
        """Run ``selected`` over ``items``; return the errors of optional enrichers."""
        if not items or not selected:
            return []
        if self.parallel and len(selected) > 1:
            return self._parallel(items, context, selected)
        errors: list[dict[str, Any]] = []
        for enricher in selected:
            if context.remaining == 0.0:
                self._deadline(enricher, errors)
                continue
            try:
                enricher.enrich(items, context)
            except PipelineError:
                raise
            except Exception as exc:
                self._failed(enricher, exc, errors)
        return errors

    def _parallel(self, items: list[Any], context: EnrichContext,
                  selected: Sequence[Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        futures: dict[Future[Any], Any] = {
            submit(enricher.enrich, items, context): enricher
            for enricher in selected[: self.max_workers]
        }
        backlog = list(selected[self.max_workers :])
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=context.remaining, return_when="FIRST_COMPLETED")
            if not done:
                break
            for future in done:
                enricher = futures[future]
                exc = future.exception()
                if isinstance(exc, PipelineError):
                    raise exc
                if exc is not None:
                    self._failed(enricher, exc, errors)
                if backlog:
                    nxt = backlog.pop(0)
                    new = submit(nxt.enrich, items, context)
                    futures[new] = nxt
                    pending.add(new)
        for future in pending:
            future.cancel()
            self._deadline(futures[future], errors)
        for enricher in backlog:
            self._deadline(enricher, errors)
        return errors

    @staticmethod
    def _failed(enricher: Any, exc: BaseException, errors: list[dict[str, Any]]) -> None:
        if enricher.required:
            raise EnrichmentFailed(
                f"Required enricher {enricher.name!r} failed: {exc}",
                stage="enrich", op=enricher.name, cause=exc,
            ) from exc
        errors.append({"enricher": enricher.name, "code": getattr(exc, "code", "failed")
                       if isinstance(getattr(exc, "code", None), str) else "failed"})

    @staticmethod
    def _deadline(enricher: Any, errors: list[dict[str, Any]]) -> None:
        if enricher.required:
            raise DeadlineExceeded(
                f"Required enricher {enricher.name!r} did not finish before the deadline.",
                stage="enrich", op=enricher.name,
            )
        errors.append({"enricher": enricher.name, "code": "deadline_exceeded"})
