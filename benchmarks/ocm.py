"""OCM time per step (max and min problem, verification included) and quality against an
independent optimum, on CIGRE LV, the Kerber Dorfnetz and Vorstadtnetz with placed
flexibilities; many feeders sequential vs. in parallel worker processes; the wall time of one
``lec ocm NET`` call beside the time ``import pandapower`` takes (issue 16).

Each feeder runs a synthetic profile of ``--steps`` one-minute steps (uncontrolled load
scaled between 0.4 and 1.2 of the feeder's loads, PV available between 0 and 100 %),
warm-starting each step from the one before, on one core. On ``--gap-steps`` of them the
``sum`` optimum of both problems is compared with SLSQP around ``pandapower.runpp``
(``ocm.reference``): gap = (reference - OCM) / |reference| for the max problem, and
(OCM - reference) / |reference| for the min problem (positive = OCM gives less); on the
300-bus feeder with 50 flexibilities only with ``--big-gap-steps`` (SLSQP over 50 variables
takes minutes).

Many feeders: ``--feeders`` real feeders (Kerber Dorfnetz, CIGRE LV and Kerber Vorstadtnetz
variants with their own seeded flexibilities) run ``--feeder-steps`` warm-started steps, once
one after the other in this process and once in an ``ocm.feeders.FeederPool`` with one worker
per core (wall time per step of all feeders; worker start-up reported apart).

Start-up: ``lec ocm NET --json`` as a new process (median of ``--repeats``), beside
``python -c "import pandapower"`` and beside the same call with pandapower imported first
(what the command paid before it read pandapower files itself).
Run: ``.venv/bin/python benchmarks/ocm.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # one core
# Run as a script, this file's folder comes first on sys.path and its name hides the ocm package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from ocm.bands import OcmProblem  # noqa: E402
from ocm.case import case_from_pandapower  # noqa: E402
from ocm.examples import (  # noqa: E402
    cigre_lv_with_flexibilities,
    kerber_dorfnetz_with_flexibilities,
    kerber_vorstadtnetz_with_flexibilities,
)
from ocm.feeders import Feeder, FeederPool, FeederStep, solve_step  # noqa: E402
from ocm.problem import OperatingPoint  # noqa: E402
from ocm.reference import pandapower_optimum  # noqa: E402


def pv_heavy(net):
    net.sgen["max_p_mw"] *= 4
    return net


FEEDERS = {
    "CIGRE LV": lambda: cigre_lv_with_flexibilities(count=10, seed=1),
    "Kerber Dorfnetz": lambda: kerber_dorfnetz_with_flexibilities(count=10, seed=1),
    "CIGRE LV, PV x4": lambda: pv_heavy(cigre_lv_with_flexibilities(count=12, seed=4, load_scaling=0.2)),
    "Kerber Dorfnetz, PV x4": lambda: pv_heavy(
        kerber_dorfnetz_with_flexibilities(count=12, seed=7, load_scaling=0.2)
    ),
    "Kerber Vorstadtnetz": lambda: kerber_vorstadtnetz_with_flexibilities(count=50, seed=1),
}
BIG_FEEDER = "Kerber Vorstadtnetz"  # 294 buses, 50 flexibilities: issue 16's "<= 1 s per step"
ROOT = Path(__file__).resolve().parent.parent


def profile(steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Load factor (0.4..1.2) and PV availability (0..1) per step: slow waves plus noise."""
    phase = np.linspace(0, np.pi, steps)
    load = 0.8 + 0.4 * np.sin(3 * phase + rng.uniform(0, np.pi)) + rng.normal(0, 0.02, steps)
    pv = np.clip(np.sin(phase) + rng.normal(0, 0.05, steps), 0, 1)
    return np.clip(load, 0.4, 1.2), pv


def run_feeder(name: str, make, steps: int, gap_steps: int, seed: int) -> dict:
    net = make()
    case = case_from_pandapower(net)
    problem = OcmProblem(case.grid, case.flexibilities)
    load, pv = profile(steps, np.random.default_rng(seed))
    is_pv = np.array([f.element == "sgen" for f in case.flexibilities])
    low0, high0 = problem.p_low_kw, problem.p_high_kw
    problem.solve(case.point, seed=seed)  # warm-up: numba kernels, first LU
    seconds, flows, results, previous = [], [], [], None
    for t in range(steps):
        point = OperatingPoint(case.point.p_kw * load[t], case.point.q_kvar * load[t])
        low = np.where(is_pv, low0 * pv[t], low0)
        started = time.process_time()
        previous = problem.solve(point, seed=seed + t, warm_start=previous, p_low_kw=low, p_high_kw=high0)
        seconds.append(time.process_time() - started)
        flows.append(previous.load_flows)
        results.append((low, previous))
    max_gaps, min_gaps = [np.nan], [np.nan]
    for t in np.linspace(0, steps - 1, gap_steps).astype(int) if gap_steps else []:
        low, result = results[t]
        reference_net = copy.deepcopy(net)
        reference_net.load["scaling"] = reference_net.load["scaling"] * load[t]
        reference_max = pandapower_optimum(reference_net, case.flexibilities, low_kw=low, high_kw=high0).sum()
        reference_min = pandapower_optimum(
            reference_net, case.flexibilities, direction=-1, low_kw=low, high_kw=result.p_max_kw
        ).sum()
        max_gaps.append((reference_max - result.p_max_kw.sum()) / max(abs(reference_max), 1e-9))
        min_gaps.append((result.p_min_kw.sum() - reference_min) / max(abs(reference_min), 1e-9))
    seconds = np.array(seconds)
    return {
        "feeder": name,
        "buses": case.grid.n_bus,
        "flex": len(case.flexibilities),
        "steps": steps,
        "mean": seconds.mean(),
        "p95": np.percentile(seconds, 95),
        "max": seconds.max(),
        "flows": np.mean(flows),
        "day_minutes": seconds.mean() * 1440 / 60,
        "feasible": sum(r.feasible for _, r in results),
        "adjusted": sum(bool(r.verification.adjustment) for _, r in results),
        "max_gap": 100 * np.nanmax(max_gaps) if gap_steps else np.nan,
        "min_gap": 100 * np.nanmax(min_gaps) if gap_steps else np.nan,
    }


def feeder_variants(count: int) -> list[tuple[str, object]]:
    """``count`` real feeders with their own flexibilities: Dorfnetz, CIGRE LV, Vorstadtnetz..."""
    makers = [
        ("Dorfnetz", lambda s: kerber_dorfnetz_with_flexibilities(count=10, seed=s)),
        ("CIGRE LV", lambda s: cigre_lv_with_flexibilities(count=10, seed=s)),
        ("Dorfnetz", lambda s: kerber_dorfnetz_with_flexibilities(count=12, seed=s)),
        ("Vorstadtnetz", lambda s: kerber_vorstadtnetz_with_flexibilities(count=20, seed=s)),
    ]
    variants = []
    for k in range(count):
        label, make = makers[k % len(makers)]
        variants.append((f"{label} #{k + 1}", make(100 + k)))
    return variants


def cpu_timed_solve(problem, request, warm_start):
    """``solve_step`` in a worker, with ``seconds`` replaced by the CPU seconds it took."""
    started = time.process_time()
    result = solve_step(problem, request, warm_start)
    return dataclasses.replace(result, seconds=time.process_time() - started)


def run_many_feeders(count: int, steps: int, seed: int, workers: int) -> dict:
    """Wall seconds per step for ``count`` feeders: sequential here vs. a ``FeederPool``."""
    feeders, points = [], {}
    for name, net in feeder_variants(count):
        case = case_from_pandapower(net)
        feeders.append(Feeder(name, case.grid, case.flexibilities))
        points[name] = case.point
    load = profile(steps, np.random.default_rng(seed))[0]

    def requests(t):
        return {
            name: FeederStep(OperatingPoint(p.p_kw * load[t], p.q_kvar * load[t]), seed=seed + t)
            for name, p in points.items()
        }

    problems = {f.name: OcmProblem(f.grid, f.flexibilities) for f in feeders}
    previous = {name: None for name in problems}
    sequential, sequential_cpu, sequential_bands = [], [], []
    for t in range(steps):
        started, cpu = time.perf_counter(), time.process_time()
        for name, request in requests(t).items():
            previous[name] = problems[name].solve(request.point, seed=request.seed, warm_start=previous[name])
        sequential.append(time.perf_counter() - started)
        sequential_cpu.append(time.process_time() - cpu)
        sequential_bands.append({n: (r.p_min_kw, r.p_max_kw) for n, r in previous.items()})
    with FeederPool(feeders, workers=workers, solver=cpu_timed_solve) as pool:
        parallel, busiest_cpu, identical = [], [], True
        for t in range(steps):
            started = time.perf_counter()
            outcomes = pool.step(requests(t))
            parallel.append(time.perf_counter() - started)
            per_worker = np.zeros(workers)
            for outcome in outcomes.values():
                per_worker[outcome.worker] += outcome.result.seconds if outcome.ok else np.nan
            busiest_cpu.append(per_worker.max())
            for name, outcome in outcomes.items():
                low, high = sequential_bands[t][name]
                identical &= outcome.ok and np.array_equal(outcome.result.p_min_kw, low)
                identical &= outcome.ok and np.array_equal(outcome.result.p_max_kw, high)
    # the first pooled step includes the workers' start-up (imports, set-up): compare the others
    sequential_s, parallel_s = np.mean(sequential[1:]), np.mean(parallel[1:])
    return {
        "feeders": count,
        "buses": sum(f.grid.n_bus for f in feeders),
        "flex": sum(len(f.flexibilities) for f in feeders),
        "workers": workers,
        "sequential": sequential_s,
        "parallel": parallel_s,
        "speedup": sequential_s / parallel_s,
        # on free cores the step would take the busiest worker's CPU time
        "free_cores_speedup": np.mean(sequential_cpu[1:]) / np.mean(busiest_cpu[1:]),
        "start_up": parallel[0],
        "identical": identical,
    }


def _wall(command: list[str], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=False, capture_output=True, cwd=ROOT)
        seconds.append(time.perf_counter() - started)
    return seconds


def start_up_figures(repeats: int) -> dict:
    """Wall seconds of ``lec ocm NET --json`` (new process) and of ``import pandapower``."""
    import pandapower as pp

    python = sys.executable
    lec = str(Path(python).with_name("lec"))
    with tempfile.TemporaryDirectory() as folder:
        net = Path(folder) / "kerber_dorfnetz.json"
        pp.to_json(kerber_dorfnetz_with_flexibilities(count=10, seed=1), str(net))
        _wall([lec, "ocm", str(net), "--json"], 1)  # numba's disk cache, page cache
        ocm_call = _wall([lec, "ocm", str(net), "--json"], repeats)
        pandapower_import = _wall([python, "-c", "import pandapower"], repeats)
        with_pandapower = _wall(
            [
                python,
                "-c",
                "import sys, pandapower; from node.cli.main import main; "
                f"sys.exit(main(['ocm', {str(net)!r}, '--json']))",
            ],
            repeats,
        )
    return {
        "ocm": statistics.median(ocm_call),
        "ocm_max": max(ocm_call),
        "import_pandapower": statistics.median(pandapower_import),
        "ocm_with_pandapower": statistics.median(with_pandapower),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="time steps per feeder")
    parser.add_argument("--gap-steps", type=int, default=3, help="steps compared with the reference")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big-gap-steps", type=int, default=0, help="gap steps of the 300-bus feeder")
    parser.add_argument("--feeders", type=int, default=8, help="feeders run in parallel")
    parser.add_argument("--feeder-steps", type=int, default=6, help="steps of the parallel run")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes")
    parser.add_argument("--repeats", type=int, default=5, help="lec ocm calls timed")
    parser.add_argument("--only", choices=("steps", "feeders", "start-up"), help="one part only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    if args.only in (None, "start-up"):
        start_up = start_up_figures(args.repeats)
        print(
            f"lec ocm NET --json (Kerber Dorfnetz, 10 flexibilities), new process, median of {args.repeats}:"
        )
        print(
            f"  wall {start_up['ocm']:.2f} s (max {start_up['ocm_max']:.2f} s) "
            f"| python -c 'import pandapower' {start_up['import_pandapower']:.2f} s "
            f"| the same call with pandapower imported first "
            f"{start_up['ocm_with_pandapower']:.2f} s | load average {os.getloadavg()[0]:.1f}\n"
        )
    if args.only in (None, "feeders"):
        row = run_many_feeders(args.feeders, args.feeder_steps, args.seed, args.workers)
        print(
            f"{row['feeders']} feeders ({row['buses']} buses, {row['flex']} flexibilities), "
            f"{args.feeder_steps} warm-started steps, wall seconds per step of all feeders:"
        )
        print(
            f"  sequential (one process) {row['sequential']:.2f} s | FeederPool with {row['workers']} "
            f"workers {row['parallel']:.2f} s | speed-up {row['speedup']:.2f}x on {os.cpu_count()} cores "
            f"| first pooled step (with worker start-up) {row['start_up']:.1f} s "
            f"| on free cores (CPU of the busiest worker) {row['free_cores_speedup']:.2f}x "
            f"| load average {os.getloadavg()[0]:.1f} "
            f"| bands identical: {'yes' if row['identical'] else 'NO'}\n"
        )
    if args.only not in (None, "steps"):
        return
    print(f"OCM, objective sum, {args.steps} warm-started steps per feeder, CPU seconds on one core\n")
    header = (
        f"{'feeder':<24}{'buses':>6}{'flex':>5}{'s/step':>8}{'p95':>7}{'max':>7}{'LF/step':>9}"
        f"{'day [min]':>10}{'feasible':>9}{'adjusted':>9}{'max gap %':>10}{'min gap %':>10}"
    )
    print(header)
    for name, make in FEEDERS.items():
        gap_steps = args.big_gap_steps if name == BIG_FEEDER else args.gap_steps
        row = run_feeder(name, make, args.steps, gap_steps, args.seed)
        print(
            f"{row['feeder']:<24}{row['buses']:>6}{row['flex']:>5}{row['mean']:>8.3f}{row['p95']:>7.3f}"
            f"{row['max']:>7.3f}{row['flows']:>9.0f}{row['day_minutes']:>10.1f}"
            f"{row['feasible']:>5}/{row['steps']:<3}{row['adjusted']:>9}{row['max_gap']:>10.4f}{row['min_gap']:>10.4f}"
        )
    print(
        "\ns/step: both problems, verification (500 random schedules + corners) and any re-optimisation;"
        "\nday: 1440 steps at the mean; adjusted: steps whose band verification tightened or shrank;"
        "\ngaps: worst over the compared steps (min gap > 0 can come from tightening, which the reference"
        "\ndoes not need because it only checks the corner, not the whole band); nan: not compared."
    )


if __name__ == "__main__":
    main()
