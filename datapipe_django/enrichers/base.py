"""The enricher protocol, :class:`BaseEnricher`, and `CompositeEnricher`, which runs a page's
enrichers.

An enricher is any object with ``name``, ``required``, ``can_enrich(auth_type)`` and
``enrich(items, context)`` (the :class:`Enricher` protocol). It runs when its name is in the
request's ``expand`` (or always, when declared ``always=True``). A dotted name
(``fund_account.contact``) expands below the enricher named by its parent path
(``fund_account``), which then runs first.

:class:`BaseEnricher` declares every hook the library calls, each with a safe default, so one
class tells the whole protocol: ``always``, ``auth_types``, ``join`` and ``join_path(model)``,
``join_below(child)``, ``honours_deadline``, ``paths()``, ``needs(model)``, ``runs_inline(items,
context)``, ``check(pipeline)``, and the two phases ``load(items, context)`` / ``apply(items,
loaded, context)``. An enricher that does not subclass it (duck-typed) keeps working: the
pipeline wraps it with :func:`as_enricher`, which gives it the defaults of the hooks it lacks.

An enricher may be *two-phase*: ``load(items, context) -> loaded`` reads what it needs
without touching the items (it runs on a worker thread) and ``apply(items, loaded, context)``
attaches it (it runs on the calling thread, only when ``load`` finished in time). The built-in
enrichers are two-phase, so an enricher abandoned at the deadline can never change the items
after the pipeline returned. An enricher with only ``enrich`` mutates the items from its
worker (the default ``load`` calls it, the default ``apply`` does nothing); if it is abandoned,
the view still renders it unexpanded (its path is dropped from the result's ``expand``), but it
may keep writing to the instances it was given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from datapipe_django.errors import DeadlineExceeded, EnrichmentFailed, PipelineError
from datapipe_django.executor import Scheduler
from datapipe_django.executor import submit as pool_submit

__all__ = [
    "BaseEnricher",
    "CompositeEnricher",
    "EnrichContext",
    "Enricher",
    "as_enricher",
    "caller_in_transaction",
    "parent_path",
]

logger = logging.getLogger("datapipe_django.enrichers")

#: A timeout this close to the deadline is the deadline's (an enricher that used
#: ``context.remaining`` as its own timeout).
_DEADLINE_SLACK = 0.005


@dataclass(frozen=True)
class EnrichContext:
    """What an enricher knows about the request (never an HTTP object).

    ``deadline`` is a ``time.monotonic()`` instant (None: no deadline); ``remaining`` is what
    is left of it. ``workers`` is this enricher's share of the pipeline's ``max_workers`` (a
    :class:`~datapipe_django.enrichers.BatchEnricher` runs that many chunks at once).
    ``memo`` lives for one execution: enrichers may memoise results in it, never across
    requests or tenants. ``tracer`` is the pipeline's: each enricher runs in a span
    ``datapipe.enricher.<name>`` of it (see :mod:`datapipe_django.observability`).
    ``joins`` names the enrichers below this one, run by the same request, whose relations
    its own query loads as well (see :meth:`BaseEnricher.join_below`); empty by default.
    """

    pipeline: str
    expand: frozenset[str]
    auth_type: str | None = None
    tenant: Any = None
    deadline: float | None = None
    workers: int = 1
    memo: dict[Any, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    tracer: Any = None
    joins: tuple[str, ...] = ()

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


@runtime_checkable
class Enricher(Protocol):
    """What makes an object an enricher: the required part of :class:`BaseEnricher`.

    Every optional hook (``always``, ``auth_types``, ``join``, ``join_path``, ``join_below``,
    ``honours_deadline``, ``paths``, ``needs``, ``runs_inline``, ``check``,
    ``load``/``apply``) has its default on :class:`BaseEnricher`;
    the pipeline gives them to an enricher that does not subclass it (:func:`as_enricher`).
    """

    name: str
    required: bool

    def can_enrich(self, auth_type: str | None) -> bool: ...

    def enrich(self, items: list[Any], context: EnrichContext) -> None: ...


def caller_in_transaction(aliases: Iterable[str | None] | None = None) -> bool:
    """Whether the calling thread is inside a transaction on one of ``aliases`` (on any
    connection it opened, when None). Only this thread's connection sees such a transaction's
    writes, so work that reads them must run here (like ``ORMFetcher.runs_inline``)."""
    if aliases is None:
        return any(c.in_atomic_block for c in connections.all(initialized_only=True))
    return any(
        alias in connections.settings and connections[alias].in_atomic_block
        for alias in set(aliases) if alias is not None
    )


def parent_path(path: str) -> str | None:
    """``"a.b.c"`` → ``"a.b"``; ``"a"`` → None."""
    head, dot, _ = path.rpartition(".")
    return head if dot else None


def _span(enricher: BaseEnricher, context: EnrichContext) -> AbstractContextManager[Any]:
    """The span an enricher runs in (on the thread that runs it)."""
    if context.tracer is None:
        return nullcontext()
    attributes: dict[str, Any] = {"datapipe.pipeline": context.pipeline,
                                  "datapipe.enricher": enricher.name}
    if context.remaining is not None:
        attributes["datapipe.deadline.remaining"] = context.remaining
    return context.tracer.span(f"datapipe.enricher.{enricher.name}", attributes)


class BaseEnricher:
    """Base class for enrichers: every hook the library calls, with its default.

    Required: a ``name`` (the ``expand`` path it answers), and either ``enrich(items,
    context)``, or ``load(items, context)`` (on a worker: read, never touch the items) and
    ``apply(items, loaded, context)`` (on the calling thread).

    ``auth_types``: the caller auth types allowed to expand it (None: every caller).
    ``required``: its failure fails the request (502; 504 at the deadline) instead of being
    reported in the result's ``errors``.
    ``always``: runs without being asked for in ``expand``.
    ``join``: it reads its relation within the fetch's own query (``select_related``, the
    path its ``join_path(model)`` gives; only
    :class:`~datapipe_django.enrichers.PrefetchEnricher` can): ``True`` whenever the request
    runs it; ``None`` where that is free, so not when the request narrows the rows' fields
    (sparse ``fields``: the query then selects no other table's columns); ``False`` never.
    """

    name: str = ""
    required: bool = False
    always: bool = False
    auth_types: frozenset[str] | None = None
    join: bool | None = False
    #: Its reads give up by the deadline on their own (a statement timeout, a bounded wait for
    #: a connection), so it may run on the calling thread, where nothing could abandon it,
    #: when no other enricher could run meanwhile (see :class:`CompositeEnricher`).
    honours_deadline: bool = False

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
        if not self.name or not isinstance(self.name, str):
            raise ImproperlyConfigured(
                f"{type(self).__name__}: give the enricher a name (the `expand` path it answers)."
            )
        if isinstance(auth_types, str):
            raise ImproperlyConfigured(
                f"{type(self).__name__}({self.name!r}): `auth_types` must be a collection of "
                f"auth types, e.g. auth_types={{{auth_types!r}}}, not a string."
            )
        self.auth_types = frozenset(auth_types) if auth_types is not None else None
        self.required = required
        self.always = always

    # -- the work (implement enrich, or load and apply) ------------------------------------------
    def enrich(self, items: list[Any], context: EnrichContext) -> None:
        """Enrich ``items`` in place. Default: ``apply(items, load(items, context), context)``."""
        if type(self).load is BaseEnricher.load:
            raise NotImplementedError(
                f"{type(self).__name__} must implement enrich(items, context), or "
                f"load(items, context) and apply(items, loaded, context)."
            )
        self.apply(items, self.load(items, context), context)

    def load(self, items: list[Any], context: EnrichContext) -> Any:
        """Read what the items need, on a worker thread, without touching them; the result is
        given to :meth:`apply`. Default (a one-phase enricher): run ``enrich`` here, return
        None."""
        if type(self).enrich is BaseEnricher.enrich:
            raise NotImplementedError(
                f"{type(self).__name__} must implement enrich(items, context), or "
                f"load(items, context) and apply(items, loaded, context)."
            )
        self.enrich(items, context)
        return None

    def apply(self, items: list[Any], loaded: Any, context: EnrichContext) -> None:
        """Attach what :meth:`load` returned to ``items``, on the calling thread, only when
        ``load`` finished before the deadline. Default: nothing (``enrich`` did the work)."""

    # -- optional hooks --------------------------------------------------------------------------
    def can_enrich(self, auth_type: str | None) -> bool:
        """Whether a caller of ``auth_type`` may have this expansion."""
        return self.auth_types is None or auth_type in self.auth_types

    def paths(self) -> tuple[str, ...]:
        """The ``expand`` paths this enricher provides. Default: its name."""
        return (self.name,)

    def runs_inline(self, items: list[Any], context: EnrichContext) -> bool:
        """Whether to run on the calling thread rather than the pool. Default: when the caller
        is inside a transaction (its writes are visible to its own connection only). Return
        False in an enricher that never reads the database (a service call)."""
        return caller_in_transaction()

    def join_path(self, model: type[Any]) -> str | None:
        """With ``join``: the ``select_related()`` path that loads this enricher's relation in
        the fetch query of ``model``'s rows, or None when it cannot be joined. Default: None."""
        return None

    def join_below(self, child: BaseEnricher) -> bool:
        """Whether this enricher's own query can load ``child``'s relation too (``child``
        expands below it), so that when a request runs both, the one query does (its
        ``context.joins`` then names ``child``) and ``child`` finds its rows loaded.
        Default: False."""
        return False

    def check(self, pipeline: Any) -> list[Any]:
        """System-check messages (``django.core.checks.CheckMessage``) about this enricher's
        declaration in ``pipeline`` (see :mod:`datapipe_django.checks`). Default: none."""
        return []

    def needs(self, model: type[Any]) -> frozenset[str] | None:
        """The field names of ``model`` (the pipeline's model) this enricher reads from the
        rows it enriches, so that a request with sparse ``fields`` still loads them. Default:
        None, "cannot tell", which makes the sources load every field. Override it when you
        know (a key attribute): ``return frozenset({"customer_id"})``."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: The optional methods an enricher may define; the others take :class:`BaseEnricher`'s.
_METHOD_HOOKS = ("can_enrich", "paths", "runs_inline", "join_path", "join_below", "check",
                 "needs")
_ATTRIBUTE_HOOKS = ("always", "auth_types", "join", "honours_deadline")


class _DuckEnricher(BaseEnricher):
    """An enricher that does not subclass :class:`BaseEnricher`, seen through it: its own
    hooks where it has them, the base's defaults elsewhere. Any other attribute is the
    wrapped object's."""

    def __init__(self, enricher: Any) -> None:
        self.wrapped = enricher
        self.name = enricher.name
        self.required = enricher.required
        for attr in _ATTRIBUTE_HOOKS:
            if hasattr(enricher, attr):
                setattr(self, attr, getattr(enricher, attr))
        for method in _METHOD_HOOKS:
            own = getattr(enricher, method, None)
            if method == "paths" and own is not None and not callable(own):
                own = _constant(tuple(own))  # ``paths`` given as an attribute
            if callable(own):
                self.__dict__[method] = own
        load, apply = getattr(enricher, "load", None), getattr(enricher, "apply", None)
        if callable(load) and callable(apply):  # two-phase
            self.__dict__["load"], self.__dict__["apply"] = load, apply

    def enrich(self, items: list[Any], context: EnrichContext) -> None:
        self.wrapped.enrich(items, context)

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return repr(self.wrapped)


def _constant(value: tuple[str, ...]) -> Callable[[], tuple[str, ...]]:
    def paths() -> tuple[str, ...]:
        return value

    return paths


def as_enricher(enricher: Any) -> BaseEnricher:
    """``enricher`` as a :class:`BaseEnricher`: itself when it subclasses it, else wrapped so
    that every hook the library calls exists (the ones it lacks take the base's defaults; the
    wrapped object is ``.wrapped``). The pipeline calls it on each of its enrichers."""
    if isinstance(enricher, BaseEnricher):
        return enricher
    return _DuckEnricher(enricher)


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
