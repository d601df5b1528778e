"""OCM for many feeders at once: a pool of worker processes, each feeder isolated.

A DSO runs OCM for hundreds of feeders every minute. ``FeederPool`` keeps every feeder's
``OcmProblem`` (its grid model, factorised admittance matrix and last solution) in one worker
process for the pool's whole life (sticky: the feeders are spread once over the workers, the
biggest first, each to the worker with the least work so far), so each step costs only the
warm-started solve. ``step`` hands every worker its feeders' operating points at once and the
workers solve in parallel.

Failures stay with their feeder:

- an exception while setting a feeder up or solving it (bad data, no load flow solution, a
  bug) is reported as that feeder's ``error``; the worker goes on with its other feeders;
- a worker that dies (a crash in native code, the out-of-memory killer, ``os._exit``) or that
  is still busy when the step's ``timeout`` runs out is replaced by a new process: the feeder
  it was solving (or setting up) is reported as failed, its other feeders move to the new
  worker (set up again, warm-started from the last result the pool received) and are solved in
  the same step.

Workers are started with ``spawn`` (no state shared with the parent, safe with numba and
threads); the compiled HELM kernels come from numba's disk cache, so a new worker is ready
after its imports.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import numpy as np

from ocm.bands import DEFAULT_SAMPLES, BandResult, OcmProblem
from ocm.flexibility import Flexibility
from ocm.grid.model import Grid
from ocm.optimizer import GaSettings
from ocm.problem import Limits, OperatingPoint


@dataclass(frozen=True)
class Feeder:
    """One feeder: its grid and flexibilities, with ``OcmProblem``'s options."""

    name: str
    grid: Grid
    flexibilities: tuple[Flexibility, ...]
    limits: Limits | None = None
    settings: GaSettings | None = None
    samples: int = DEFAULT_SAMPLES


@dataclass(frozen=True)
class FeederStep:
    """What one feeder's solve of one step gets (see ``OcmProblem.solve``)."""

    point: OperatingPoint
    objective: str = "sum"
    seed: int = 0
    p_low_kw: np.ndarray | None = None
    p_high_kw: np.ndarray | None = None


@dataclass(frozen=True)
class FeederOutcome:
    """One feeder's outcome of one step: its bands, or why there are none."""

    name: str
    result: BandResult | None
    error: str = ""  # "" when solved
    worker: int = -1  # the worker that solved it (or failed to)
    seconds: float = 0.0  # wall time from the step's start until its answer

    @property
    def ok(self) -> bool:
        return self.result is not None


Solver = Callable[[OcmProblem, FeederStep, BandResult | None], BandResult]


def solve_step(problem: OcmProblem, request: FeederStep, warm_start: BandResult | None) -> BandResult:
    """The default solver of a feeder's step: ``OcmProblem.solve``, warm-started."""
    return problem.solve(
        request.point,
        objective=request.objective,
        seed=request.seed,
        warm_start=warm_start,
        p_low_kw=request.p_low_kw,
        p_high_kw=request.p_high_kw,
    )


class FeederPool:
    """Worker processes that each hold some feeders' OCM problems; ``step`` solves them all.

    ``workers`` defaults to the CPU count (at most one per feeder); ``timeout`` (seconds, per
    step) stops a worker that has not answered by then. ``solver`` is called in the workers as
    ``solver(problem, request, warm_start)`` and must be importable by name (module level).
    Use as a context manager, or call ``close``.
    """

    def __init__(
        self,
        feeders: Iterable[Feeder],
        workers: int | None = None,
        *,
        timeout: float | None = None,
        solver: Solver = solve_step,
        start_method: str = "spawn",
    ):
        self.feeders = {f.name: f for f in feeders}
        if not self.feeders:
            raise ValueError("a feeder pool needs at least one feeder")
        count = workers or os.cpu_count() or 1
        self.n_workers = max(1, min(count, len(self.feeders)))
        self.timeout = timeout
        self.replaced = 0  # workers replaced after a crash or a timeout
        self._solver = solver
        self._context = multiprocessing.get_context(start_method)
        self._home = _balanced_homes(self.feeders.values(), self.n_workers)
        self._last: dict[str, BandResult] = {}
        self._blameless_deaths: dict[int, int] = {}  # per step: worker deaths between feeders
        self._workers: list[_Worker | None] = [None] * self.n_workers
        for w in range(self.n_workers):
            self._spawn(w)
        for w in range(self.n_workers):  # after all are started: a send waits for the reader
            self._add_feeders(w)

    def __enter__(self) -> FeederPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def step(self, requests: dict[str, FeederStep]) -> dict[str, FeederOutcome]:
        """Solves one step of every feeder in ``requests`` (by name), in parallel; returns one
        outcome per requested feeder. Never raises for a feeder's failure."""
        unknown = sorted(set(requests) - set(self.feeders))
        if unknown:
            raise KeyError(f"unknown feeder(s): {', '.join(unknown)}")
        started = time.perf_counter()
        deadline = None if self.timeout is None else started + self.timeout
        self._blameless_deaths = {}
        outcomes: dict[str, FeederOutcome] = {}
        pending = {w: [n for n in requests if self._home[n] == w] for w in range(self.n_workers)}
        current: dict[int, str | None] = {}
        for w, names in pending.items():
            if names:
                self._send(w, ("solve", [(n, requests[n]) for n in names]))
                current[w] = None
        while any(pending.values()):
            busy = [w for w, names in pending.items() if names]
            handles = {}
            for w in busy:
                worker = self._workers[w]
                handles[worker.conn] = w
                handles[worker.process.sentinel] = w
            left = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
            ready = wait(list(handles), timeout=left)
            if not ready:  # timeout: stop every worker still busy
                for w in busy:
                    self._fail(w, pending, current, outcomes, started, requests, "timed out")
                break
            for w in sorted({handles[r] for r in ready}):
                if not pending[w]:
                    continue
                self._drain(w, pending, current, outcomes, started, requests)
        return {name: outcomes[name] for name in requests}

    def close(self) -> None:
        """Stops every worker."""
        for worker in self._workers:
            if worker is None:
                continue
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.conn.send(("stop",))
        for w, worker in enumerate(self._workers):
            if worker is None:
                continue
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
            self._workers[w] = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers, in worker order."""
        return [w.process.pid for w in self._workers if w is not None]

    def _drain(self, w, pending, current, outcomes, started, requests) -> None:
        """Reads every answer worker ``w`` has sent; handles its death."""
        worker = self._workers[w]
        while pending[w]:
            try:
                if not worker.conn.poll():
                    if worker.process.is_alive():
                        return
                    raise EOFError
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(timeout=5)
                code = worker.process.exitcode
                self._fail(w, pending, current, outcomes, started, requests, f"died (exit code {code})")
                return
            if message[0] == "start":
                current[w] = message[1]
                continue
            _, name, result, error = message
            if result is not None:
                self._last[name] = result
            outcomes[name] = FeederOutcome(name, result, error, w, time.perf_counter() - started)
            pending[w].remove(name)
            current[w] = None

    def _fail(self, w, pending, current, outcomes, started, requests, why) -> None:
        """Worker ``w`` died or timed out: the feeder it was solving fails (none if it died
        between feeders), a new worker takes the rest (solved now unless the step timed out)."""
        culprit = current.get(w)
        stopped = why == "timed out"
        if culprit is None:
            self._blameless_deaths[w] = self._blameless_deaths.get(w, 0) + 1
        repeated = self._blameless_deaths.get(w, 0) >= 2  # twice between feeders: give up this step
        for name in list(pending[w]):
            if name == culprit or stopped or repeated:
                if name == culprit:
                    error = f"worker process {why} while solving this feeder"
                elif stopped:
                    error = "not solved: its worker was stopped when the step timed out"
                else:
                    error = f"not solved: its worker process {why} twice between feeders"
                outcomes[name] = FeederOutcome(name, None, error, w, time.perf_counter() - started)
                pending[w].remove(name)
        self._replace(w)
        current[w] = None
        if pending[w]:
            self._send(w, ("solve", [(n, requests[n]) for n in pending[w]]))

    def _spawn(self, w: int) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child, self._solver), name=f"ocm-feeders-{w}", daemon=True
        )
        process.start()
        child.close()
        self._workers[w] = _Worker(process, parent)

    def _add_feeders(self, w: int) -> None:
        """Hands worker ``w`` its feeders, with their last results as warm starts."""
        for name, home in self._home.items():
            if home == w:
                self._send(w, ("add", self.feeders[name], self._last.get(name)))

    def _replace(self, w: int) -> None:
        worker = self._workers[w]
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self.replaced += 1
        self._spawn(w)
        self._add_feeders(w)

    def _send(self, w: int, message) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):  # a dead worker: ``step`` sees its sentinel
            self._workers[w].conn.send(message)


def _balanced_homes(feeders: Iterable[Feeder], workers: int) -> dict[str, int]:
    """Each feeder's worker: the biggest first, each to the worker with the least work so far
    (work estimated as buses x (flexibilities + 1), roughly the load flows' cost)."""
    load = [0.0] * workers
    homes = {}
    for feeder in sorted(feeders, key=lambda f: -f.grid.n_bus * (len(f.flexibilities) + 1)):
        w = min(range(workers), key=lambda i: (load[i], i))
        homes[feeder.name] = w
        load[w] += feeder.grid.n_bus * (len(feeder.flexibilities) + 1)
    return homes


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection


@dataclass
class _FeederState:
    feeder: Feeder
    problem: OcmProblem | None = None
    setup_error: str = ""
    last: BandResult | None = field(default=None, repr=False)


def _worker_main(conn: Connection, solver: Solver) -> None:
    """A worker: takes feeders on ``add``, sets each up on its first ``solve`` and solves it,
    ends on ``stop``. It announces every feeder before touching it, so that a crash (in the
    set-up or the solve) is laid at that feeder's door and its other feeders go on."""
    states: dict[str, _FeederState] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message[0] == "stop":
            return
        if message[0] == "add":
            feeder, last = message[1], message[2]
            states[feeder.name] = _FeederState(feeder, last=last)
            continue
        for name, request in message[1]:
            conn.send(("start", name))
            state = states[name]
            if state.problem is None and not state.setup_error:  # set up on its first step
                state.problem, state.setup_error = _set_up(state.feeder)
            if state.problem is None:
                conn.send(("done", name, None, state.setup_error))
                continue
            try:
                result = solver(state.problem, request, state.last)
            except Exception as error:  # isolate the feeder, report the cause
                conn.send(("done", name, None, _describe(error)))
                continue
            state.last = result
            conn.send(("done", name, result, ""))


def _set_up(feeder: Feeder) -> tuple[OcmProblem | None, str]:
    """The feeder's ``OcmProblem``, or None and why not."""
    try:
        problem = OcmProblem(
            feeder.grid,
            feeder.flexibilities,
            feeder.limits,
            settings=feeder.settings,
            samples=feeder.samples,
        )
    except Exception as error:
        return None, f"set-up failed: {_describe(error)}"
    return problem, ""


def _describe(error: BaseException) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    place = f" (at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno})" if where else ""
    return f"{type(error).__name__}: {error}{place}"
