"""`CompositeEnricher`: runs the selected enrichers of a page under one deadline (parents
before the paths below them, on the shared pool or the calling thread), and reports or raises
their failures.

The enricher protocol it runs is :class:`~datapipe_django.enrichers.base.BaseEnricher`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from datapipe_django.enrichers.base import (
    BaseEnricher,
    EnrichContext,
    Enricher,
    as_enricher,
    parent_path,
)
from datapipe_django.errors import DeadlineExceeded, EnrichmentFailed, PipelineError
from datapipe_django.executor import Scheduler
from datapipe_django.executor import submit as pool_submit

__all__ = ["CompositeEnricher"]

logger = logging.getLogger("datapipe_django.enrichers")

#: A timeout this close to the deadline is the deadline's (an enricher that used
#: ``context.remaining`` as its own timeout).
_DEADLINE_SLACK = 0.005


def _span(enricher: BaseEnricher, context: EnrichContext) -> AbstractContextManager[Any]:
    """The span an enricher runs in (on the thread that runs it)."""
    if context.tracer is None:
        return nullcontext()
    attributes: dict[str, Any] = {"datapipe.pipeline": context.pipeline,
                                  "datapipe.enricher": enricher.name}
    if context.remaining is not None:
        attributes["datapipe.deadline.remaining"] = context.remaining
    return context.tracer.span(f"datapipe.enricher.{enricher.name}", attributes)


Report = Callable[[str, str, float], None]


@dataclass
class _Task:
    enricher: BaseEnricher
    report: Report | None = None
    parent: _Task | None = None
    children: list[_Task] = field(default_factory=list)
    outcome: str = "waiting"  # waiting | running | ok | an error code
    started: float | None = None
    host: _Task | None = None  # the task whose query loads this one's relation too
    joins: list[str] = field(default_factory=list)  # the tasks whose relations it loads
    here: bool = False  # runs on the calling thread

    def start(self) -> None:
        self.outcome, self.started = "running", time.monotonic()

    def end(self, outcome: str) -> None:
        self.outcome = outcome
        if self.report is not None:
            duration = time.monotonic() - self.started if self.started is not None else 0.0
            self.report(self.enricher.name, outcome, duration)


class CompositeEnricher:
    """Runs the selected enrichers of a page under one deadline.

    ``parallel=True``: on the shared thread pool, at most ``max_workers`` at once.
    ``parallel=False``: one at a time, in declaration order.
    Either way a parent path runs before the paths below it (``fund_account`` before
    ``fund_account.contact``), and the results of two-phase enrichers are applied on the
    calling thread.

    With a deadline, enrichers run on the pool so that the deadline can abandon them: an
    optional one still running then is reported (``deadline_exceeded``), a required one raises
    :class:`~datapipe_django.errors.DeadlineExceeded`; the call returns at the deadline, never
    later. An enricher runs on the calling thread instead when its ``runs_inline(items,
    context)`` says so (the caller is inside a transaction on its database; it has nothing to
    read), when there is neither a deadline nor parallelism, or when it ``honours_deadline``
    and the deadline is not near (``_INLINE_MARGIN``) and nothing else could run meanwhile
    (one at a time; else it is this thread's share while the others run on the pool). What
    ran here and still finished past the deadline is reported, never applied. The one
    scheduler is :class:`~datapipe_django.executor.Scheduler`.

    When a request runs an enricher and one below it whose relation the first one's query
    can load too (``join_below``), the first one's ``context.joins`` names the second, which
    then finds its rows loaded.

    A failed optional enricher is reported as ``{"enricher": name, "code": ...}`` (``failed``,
    ``timeout``, ``deadline_exceeded``, or ``dependency_failed`` below a failed parent); a
    required one raises :class:`~datapipe_django.errors.EnrichmentFailed`.
    """

    def __init__(
        self,
        enrichers: Sequence[Enricher],
        *,
        parallel: bool = False,
        max_workers: int = 5,
        submit: Callable[..., Future[Any]] = pool_submit,
    ) -> None:
        self.enrichers = [as_enricher(e) for e in enrichers]
        self.parallel = parallel
        self.max_workers = max(1, int(max_workers))
        self._submit = submit
        self._providers = {p: e for e in self.enrichers for p in e.paths()}
        self._selections: dict[tuple[frozenset[str], str | None], list[BaseEnricher]] = {}

    # -- selection ---------------------------------------------------------------------------
    def provider(self, path: str) -> BaseEnricher | None:
        """The enricher that provides ``path`` (None if none does)."""
        return self._providers.get(path)

    def parent_of(self, enricher: BaseEnricher) -> BaseEnricher | None:
        """The enricher that must run before ``enricher`` (None for a top-level path)."""
        parent = parent_path(enricher.name)
        return self.provider(parent) if parent is not None else None

    def select(self, expand: frozenset[str], auth_type: str | None) -> list[BaseEnricher]:
        """The enrichers a request runs: asked for (or ``always``) and allowed for the caller,
        with every enricher above them; in declaration order. (Worked out once per expand set
        and auth type: the fetch and enrich stages ask it several times per request.)"""
        key = (frozenset(expand), auth_type)
        found = self._selections.get(key)
        if found is None:
            if len(self._selections) >= _SELECTIONS:
                self._selections.clear()
            found = self._selections[key] = self._select(*key)
        return list(found)

    def _select(self, expand: frozenset[str], auth_type: str | None) -> list[BaseEnricher]:
        chosen: set[int] = set()
        for enricher in self.enrichers:
            if enricher.always or any(p in expand for p in enricher.paths()):
                chosen.update(id(e) for e in self._allowed_chain(enricher, chosen, auth_type))
        return [e for e in self.enrichers if id(e) in chosen]

    def _allowed_chain(self, enricher: BaseEnricher, chosen: set[int],
                       auth_type: str | None) -> list[BaseEnricher]:
        """``enricher`` and the enrichers above it not ``chosen`` yet, when the caller may
        have every one of them; else nothing."""
        chain: list[BaseEnricher] = []
        node: BaseEnricher | None = enricher
        while node is not None and id(node) not in chosen:
            chain.append(node)
            node = self.parent_of(node)
        return chain if all(e.can_enrich(auth_type) for e in chain) else []

    # -- execution ---------------------------------------------------------------------------
    def run(self, items: list[Any], context: EnrichContext, selected: Sequence[BaseEnricher], *,
            report: Report | None = None) -> list[dict[str, Any]]:
        """Run ``selected`` over ``items``; return the errors of optional enrichers.

        ``report(name, outcome, seconds)`` is called once per enricher as it ends (``ok`` or
        its error code), e.g. to feed ``Metrics.enricher``.
        """
        if not items or not selected:
            return []
        tasks = self._plan(selected, report)
        errors: list[dict[str, Any]] = []
        pooled = self.parallel or context.deadline is not None
        workers = self.max_workers if self.parallel else 1
        share = max(1, workers // max(1, len(tasks))) if self.parallel else 1
        run = _Run(items, context, replace(context, workers=share), Scheduler(
            context.deadline, self._submit), workers, pooled, errors)
        try:
            self._schedule(run, [t for t in tasks if t.parent is None])
        except BaseException:
            run.scheduler.abandon()  # a required failure ends the request: drop what waits
            raise
        return errors

    def _plan(self, selected: Sequence[BaseEnricher], report: Report | None) -> list[_Task]:
        tasks = {id(e): _Task(e, report) for e in selected}
        for task in tasks.values():
            parent = self.parent_of(task.enricher)
            if parent is not None and id(parent) in tasks:
                task.parent = tasks[id(parent)]
                task.parent.children.append(task)
        for task in tasks.values():
            if task.parent is None:
                _host_joins(task)
        return list(tasks.values())

    def _schedule(self, run: _Run, ready: list[_Task]) -> None:
        scheduler = run.scheduler
        while ready or scheduler.running:
            ready = self._start(run, ready)
            finished = scheduler.wait()
            if not finished and scheduler.running:
                # The deadline: abandon what runs, report it and everything still to run.
                for task in [*scheduler.abandon(), *ready]:
                    self._deadline(task, run.errors)
                    self._skip_below(task, run.errors, code="deadline_exceeded")
                return
            for task, future in finished:
                if self._finish(task, future, run):
                    ready.extend(task.children)

    def _start(self, run: _Run, ready: list[_Task]) -> list[_Task]:
        """Start what may start; return what must wait for a free worker.

        On this thread: everything, without a deadline or parallelism; an enricher whose
        relation its parent's query loaded (``host``), when it honours the deadline; one whose
        ``runs_inline`` says so (in a transaction; a PrefetchEnricher whose rows are all
        loaded already, by the fetch's join or its parent's query); and one enricher that
        ``honours_deadline`` when nothing else could run meanwhile, or this thread's share
        of several (then the others run on the pool), while the deadline is not near. On
        the pool: the others, at most ``workers`` at once."""
        here: list[_Task] = []
        pool: list[_Task] = []
        for task in ready:
            if run.context.remaining == 0.0:
                self._deadline(task, run.errors)
                self._skip_below(task, run.errors, code="deadline_exceeded")
            elif self._here(task, run):
                here.append(task)
            else:
                pool.append(task)
        scheduler = run.scheduler
        mine = self._share(pool, run)
        if mine is not None:
            here.append(mine)
            pool.remove(mine)
        slots = run.workers - (mine is not None)
        waiting = []
        for task in pool:
            if scheduler.running < slots:
                task.start()
                scheduler.start(task, self._work, task.enricher, run.items, run.for_task(task))
            else:
                waiting.append(task)
        for task in here:
            task.start()
            task.here = True
            scheduler.run_here(task, self._work, task.enricher, run.items, run.for_task(task))
        return waiting

    @staticmethod
    def _here(task: _Task, run: _Run) -> bool:
        """Whether ``task`` runs on this thread whatever else runs: without a deadline or
        parallelism, when its host's query loaded its rows (nothing to do), or when its
        ``runs_inline`` says so."""
        if not run.pooled or (task.host is not None and _may_run_here(task, run.context)):
            return True
        return bool(task.enricher.runs_inline(run.items, run.task_context))

    def _share(self, pool: list[_Task], run: _Run) -> _Task | None:
        """The task this thread runs itself rather than wait: one that honours the deadline,
        while the deadline is not near, and (one at a time) when nothing runs on the pool."""
        if not self.parallel and run.scheduler.running:
            return None
        candidates = [t for t in pool if _may_run_here(t, run.context)]
        if not candidates:
            return None
        return candidates[-1] if self.parallel else (candidates[0] if pool[0] is candidates[0]
                                                     else None)

    @staticmethod
    def _work(enricher: BaseEnricher, items: list[Any], context: EnrichContext) -> Any:
        """The load phase (of a one-phase enricher: the whole enrich), in its span."""
        with _span(enricher, context):
            return enricher.load(items, context)

    def _finish(self, task: _Task, future: Future[Any], run: _Run) -> bool:
        """Apply what a task loaded (on this thread); whether the tasks below it may run."""
        if task.here and run.context.remaining == 0.0:
            # It ran here past the deadline: the response is owed now, without it.
            self._deadline(task, run.errors)
            self._skip_below(task, run.errors, code="deadline_exceeded")
            return False
        try:
            task.enricher.apply(run.items, future.result(), run.task_context)
        except Exception as exc:
            self._failed(task, exc, run.errors, run.context)
            self._skip_below(task, run.errors)
            return False
        task.end("ok")
        return True

    # -- outcomes ----------------------------------------------------------------------------
    def _failed(self, task: _Task, exc: BaseException, errors: list[dict[str, Any]],
                context: EnrichContext) -> None:
        enricher = task.enricher
        code = _error_code(exc)
        remaining = context.remaining
        if code == "timeout" and remaining is not None and remaining <= _DEADLINE_SLACK:
            code = "deadline_exceeded"  # its own timeout was what was left of the deadline
        task.end(code)
        if isinstance(exc, ImproperlyConfigured):
            raise exc  # a declaration mistake is a bug, not an outage
        if enricher.required:
            _raise_required(enricher, code, exc)
        logger.warning("Optional enricher %r failed (%s): %s", enricher.name, code, exc,
                       exc_info=exc if code == "failed" else None)
        errors.append({"enricher": enricher.name, "code": code})

    @staticmethod
    def _deadline(task: _Task, errors: list[dict[str, Any]]) -> None:
        task.end("deadline_exceeded")
        enricher = task.enricher
        if enricher.required:
            raise DeadlineExceeded(
                f"Required enricher {enricher.name!r} did not finish before the deadline.",
                stage="enrich", op=enricher.name,
            )
        errors.append({"enricher": enricher.name, "code": "deadline_exceeded"})

    def _skip_below(self, task: _Task, errors: list[dict[str, Any]],
                    code: str = "dependency_failed") -> None:
        """The enrichers below a failed one cannot run: report them."""
        for child in task.children:
            child.end(code)
            if child.enricher.required:
                error = DeadlineExceeded if code == "deadline_exceeded" else EnrichmentFailed
                raise error(
                    f"Required enricher {child.enricher.name!r} could not run: "
                    f"{task.enricher.name!r} failed.", stage="enrich", op=child.enricher.name,
                )
            errors.append({"enricher": child.enricher.name, "code": code})
            self._skip_below(child, errors, code)


def _raise_required(enricher: BaseEnricher, code: str, exc: BaseException) -> None:
    """A required enricher failed: the request fails (504 at the deadline, else 502)."""
    if code == "deadline_exceeded" and not isinstance(exc, PipelineError):
        raise DeadlineExceeded(
            f"Required enricher {enricher.name!r} did not finish before the deadline.",
            stage="enrich", op=enricher.name, cause=exc,
        ) from exc
    if isinstance(exc, PipelineError):
        if exc.stage is None:
            exc.stage = "enrich"
        exc.op = exc.op or enricher.name
        raise exc
    raise EnrichmentFailed(
        f"Required enricher {enricher.name!r} failed: {exc}",
        stage="enrich", op=enricher.name, cause=exc,
    ) from exc


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, PipelineError):
        return exc.code
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
        return "timeout"  # the enricher's own call timed out (urllib wraps it in URLError)
    return "failed"


#: How many (expand, auth type) selections a composite remembers.
_SELECTIONS = 256

#: With less than this left of the deadline, an enricher runs on a worker the deadline can
#: abandon, even one that honours the deadline itself.
_INLINE_MARGIN = 0.05


def _may_run_here(task: _Task, context: EnrichContext) -> bool:
    remaining = context.remaining
    return task.enricher.honours_deadline and (remaining is None or remaining >= _INLINE_MARGIN)


def _host_joins(task: _Task) -> None:
    """Below ``task``: which task's query loads each child's relation too (its own parent's,
    or the query that loads its parent)."""
    for child in task.children:
        host = task.host or task
        if host.enricher.join_below(child.enricher):
            child.host = host
            host.joins.append(child.enricher.name)
        _host_joins(child)


@dataclass
class _Run:
    """One run of a page's enrichers: what every step of it reads."""

    items: list[Any]
    context: EnrichContext
    task_context: EnrichContext
    scheduler: Scheduler[_Task]
    workers: int
    pooled: bool
    errors: list[dict[str, Any]]

    def for_task(self, task: _Task) -> EnrichContext:
        return replace(self.task_context, joins=tuple(task.joins)) if task.joins \
            else self.task_context
