"""Load flows per second: batched HELM against pandapower.runpp on the Kerber Dorfnetz.

Both solve the same random load scenarios around the base case (every bus load scaled by a
factor in [0.5, 1.5]). pandapower is timed with several settings that give the same results;
the fastest is the reference for the ratios. Run: ``.venv/bin/python benchmarks/loadflow.py``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import time
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn

from ocm.grid.helm import HelmSolver
from ocm.grid.network_io import grid_from_pandapower

BATCH_SIZES = (1, 10, 100, 1000)
PANDAPOWER_SETTINGS = {
    "defaults": {},
    "numba, init=results, no connectivity check": {
        "numba": True,
        "init": "results",
        "check_connectivity": False,
    },
    "numba, init=results, no connectivity check, recycle bus_pq": {
        "numba": True,
        "init": "results",
        "check_connectivity": False,
        "recycle": {"bus_pq": True, "trafo": False, "gen": False},
    },
    "bfsw, init=results, no connectivity check": {
        "algorithm": "bfsw",
        "init": "results",
        "check_connectivity": False,
    },
}


def scenarios(grid, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    factor = rng.uniform(0.5, 1.5, (k, grid.n_bus))
    return grid.base_load_kw * factor, grid.base_load_kvar * factor


def helm_rate(solver: HelmSolver, p: np.ndarray, q: np.ndarray, seconds: float):
    """Solutions per second of repeated batched solves, and the last result."""
    result = solver.solve(p, q)  # warm-up (numba is compiled or loaded from its cache)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        result = solver.solve(p, q)
        runs += 1
    return len(p) * runs / (time.perf_counter() - start), result


def pandapower_rate(net, grid, p, q, settings: dict, seconds: float) -> tuple[float, np.ndarray]:
    """Load flows per second of runpp over the scenarios, and the bus voltages of the first
    scenario (to check that the settings give the same result as HELM)."""
    net = copy.deepcopy(net)
    position = dict(zip(grid.bus_ids.tolist(), range(grid.n_bus), strict=True))
    load_position = net.load["bus"].map(position).to_numpy()
    share = net.load["p_mw"].to_numpy() * 1e3 / grid.base_load_kw[load_position]

    def set_scenario(s: int) -> None:
        net.load["p_mw"] = p[s, load_position] * share / 1e3
        net.load["q_mvar"] = q[s, load_position] * share / 1e3

    set_scenario(0)
    pp.runpp(net, **{k: v for k, v in settings.items() if k != "recycle"})
    pp.runpp(net, **settings)
    vm = net.res_bus["vm_pu"].loc[grid.bus_ids].to_numpy()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        set_scenario(runs % len(p))
        pp.runpp(net, **settings)
        runs += 1
    return runs / (time.perf_counter() - start), vm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    random.seed(args.seed)  # the Kerber generator draws line types with `random`
    net = pn.create_kerber_dorfnetz()
    grid = grid_from_pandapower(net)
    solver = HelmSolver(grid)
    rng = np.random.default_rng(args.seed)
    print(f"Kerber Dorfnetz: {grid.n_bus} buses, {grid.n_line} lines, {grid.n_trafo} trafo")
    print(f"pandapower {pp.__version__}, numpy {np.__version__}; {args.seconds:.1f} s each\n")

    p, q = scenarios(grid, 200, rng)
    reference = solver.solve(p[:1], q[:1]).vm_pu[0]
    rates = {}
    print("pandapower.runpp                                            LF/s   max |dvm| to HELM")
    for name, settings in PANDAPOWER_SETTINGS.items():
        rates[name], vm = pandapower_rate(net, grid, p, q, settings, args.seconds)
        print(f"  {name:<57} {rates[name]:7.0f}   {np.abs(vm - reference).max():.1e}")
    best = max(rates, key=rates.get)
    print(f"fastest: {best}\n")

    print("      K   HELM LF/s   pandapower LF/s   HELM/pandapower   terms (median, max)")
    for k in BATCH_SIZES:
        p, q = scenarios(grid, k, rng)
        rate, result = helm_rate(solver, p, q, args.seconds)
        assert result.all_converged, "every benchmark scenario must converge"
        terms = f"{np.median(result.terms):.0f}, {result.terms.max()}"
        print(f"  {k:5d}   {rate:9.0f}   {rates[best]:15.0f}   {rate / rates[best]:15.1f}   {terms}")


if __name__ == "__main__":
    main()
