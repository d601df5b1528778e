"""Load flows per second: batched HELM against pandapower.runpp on the Kerber Dorfnetz, and the
three-phase HELM against pandapower.runpp_3ph on an unbalanced Kerber Dorfnetz.

Both solve the same random load scenarios around the base case (every bus load, or every bus
and phase load, scaled by a factor in [0.5, 1.5]). pandapower is timed with several settings
that give the same results; the fastest is the reference for the ratios. Run:
``.venv/bin/python benchmarks/loadflow.py`` (``--skip-balanced``/``--skip-3ph`` for one part).
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandapower as pp
import pandapower.networks as pn

# Run as a script, this file's folder comes first on sys.path and benchmarks/ocm.py would hide
# the ocm package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

from ocm.grid.helm import HelmSolver  # noqa: E402
from ocm.grid.helm_3ph import Helm3phSolver  # noqa: E402
from ocm.grid.network_io import grid_3ph_from_pandapower, grid_from_pandapower  # noqa: E402

BATCH_SIZES = (1, 10, 100, 1000)
PANDAPOWER_3PH_SETTINGS = {
    "defaults": {},
    "init=results": {"init": "results"},
    "init=results, no connectivity check": {"init": "results", "check_connectivity": False},
}
SINGLE_PHASE_SHARE = 0.5  # of the Dorfnetz's house loads, moved onto one phase
CHARGER_KW = 11.0  # single-phase chargers (16 A, 230 V would be 3.7 kW; 11 kW is a worst case)
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
    """K random scenarios around the grid's base loads (per bus, or per bus and phase)."""
    factor = rng.uniform(0.5, 1.5, (k, *np.shape(grid.base_load_kw)))
    return grid.base_load_kw * factor, grid.base_load_kvar * factor


def helm_rate(solver: HelmSolver | Helm3phSolver, p: np.ndarray, q: np.ndarray, seconds: float):
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


def unbalanced_dorfnetz(seed: int):
    """Kerber Dorfnetz with zero-sequence data (cables r0 = 4 r, x0 = 4 x; Dyn trafo), half of
    its house loads on single phases and three single-phase chargers on phase a."""
    random.seed(seed)
    net = pn.create_kerber_dorfnetz()
    rng = np.random.default_rng(seed)
    pp.add_zero_impedance_parameters(net)
    for zero, positive in (("r0_ohm_per_km", "r_ohm_per_km"), ("x0_ohm_per_km", "x_ohm_per_km")):
        net.line[zero] = net.line[positive] * 4.0
    net.line["c0_nf_per_km"] = net.line["c_nf_per_km"]
    net.trafo["vector_group"] = "Dyn"
    net.trafo["vk0_percent"] = net.trafo["vk_percent"]
    net.trafo["vkr0_percent"] = net.trafo["vkr_percent"]
    net.trafo["mag0_percent"], net.trafo["mag0_rx"], net.trafo["si0_hv_partial"] = 100.0, 0.0, 0.9
    net.ext_grid["s_sc_max_mva"], net.ext_grid["rx_max"] = 100.0, 0.1
    net.ext_grid["x0x_max"], net.ext_grid["r0x0_max"] = 1.0, 0.1
    moved = rng.choice(net.load.index, int(SINGLE_PHASE_SHARE * len(net.load)), replace=False)
    for load in moved:
        phase = "abc"[int(rng.integers(3))]
        row = net.load.loc[load]
        pp.create_asymmetric_load(
            net, row["bus"], **{f"p_{phase}_mw": row["p_mw"], f"q_{phase}_mvar": row["q_mvar"]}
        )
    net.load = net.load.drop(moved)
    for bus in rng.choice(net.load["bus"].unique(), 3, replace=False):
        pp.create_asymmetric_load(net, bus, p_a_mw=CHARGER_KW / 1e3)
    return net


def pandapower_3ph_rate(net, grid3, p, q, settings: dict, seconds: float) -> tuple[float, np.ndarray]:
    """runpp_3ph load flows per second over the scenarios, and the complex phase voltages
    (n_bus, 3) of the first scenario. The net's loads become one wye asymmetric load per bus
    holding the scenario's per-phase bus loads (the same constant-power model)."""
    net = copy.deepcopy(net)
    for table in ("load", "sgen", "asymmetric_load", "asymmetric_sgen"):
        net[table] = net[table].iloc[0:0]
    for bus in grid3.balanced.bus_ids:
        pp.create_asymmetric_load(net, bus)
    columns = [f"{quantity}_{x}_{unit}" for quantity, unit in (("p", "mw"), ("q", "mvar")) for x in "abc"]

    def set_scenario(s: int) -> None:
        net.asymmetric_load[columns] = np.concatenate([p[s], q[s]], axis=1) / 1e3

    set_scenario(0)
    pp.runpp_3ph(net)  # compiles numba and gives init=results its start
    pp.runpp_3ph(net, **settings)
    voltage = np.stack(
        [
            net.res_bus_3ph.loc[grid3.balanced.bus_ids, f"vm_{x}_pu"]
            * np.exp(1j * np.deg2rad(net.res_bus_3ph.loc[grid3.balanced.bus_ids, f"va_{x}_degree"]))
            for x in "abc"
        ],
        axis=1,
    )
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        set_scenario(runs % len(p))
        pp.runpp_3ph(net, **settings)
        runs += 1
    return runs / (time.perf_counter() - start), voltage


def three_phase(args: argparse.Namespace) -> None:
    net = unbalanced_dorfnetz(args.seed)
    grid3 = grid_3ph_from_pandapower(net)
    solver = Helm3phSolver(grid3)
    rng = np.random.default_rng(args.seed)
    g = grid3.balanced
    print(
        f"Three-phase: unbalanced Kerber Dorfnetz: {g.n_bus} buses, {g.n_line} lines, {g.n_trafo} trafo, "
        f"{len(net.asymmetric_load)} single-phase loads"
    )
    p, q = scenarios(grid3, 200, rng)
    first = solver.solve(p[:1], q[:1])
    reference = first.vm_pu[0] * np.exp(1j * np.deg2rad(first.va_degree[0]))
    best = fastest_pandapower(
        "pandapower.runpp_3ph", "max |dV|", PANDAPOWER_3PH_SETTINGS, reference,
        lambda settings: pandapower_3ph_rate(net, grid3, p, q, settings, args.seconds),
    )  # fmt: skip
    compare_batches("HELM 3ph", "runpp_3ph", solver, grid3, best, rng, args.seconds)


def fastest_pandapower(label: str, distance: str, settings: dict, reference: np.ndarray, rate) -> float:
    """Prints pandapower's rate (load flows per second) with each of ``settings`` and how far its
    voltages are from ``reference`` (HELM's); returns the fastest rate."""
    rates = {}
    print(f"{label:<60}LF/s   {distance} to HELM")
    for name, options in settings.items():
        rates[name], voltage = rate(options)
        print(f"  {name:<57} {rates[name]:7.0f}   {np.abs(voltage - reference).max():.1e}")
    best = max(rates, key=rates.get)
    print(f"fastest: {best}\n")
    return rates[best]


def compare_batches(label: str, other: str, solver, grid, best: float, rng, seconds: float) -> None:
    """HELM's rate for every batch size against pandapower's fastest ``best``, as ratios."""
    print(f"      K   {label + ' LF/s':>13}   {other + ' LF/s':>15}   HELM/pandapower   terms (median, max)")
    for k in BATCH_SIZES:
        p, q = scenarios(grid, k, rng)
        rate, result = helm_rate(solver, p, q, seconds)
        assert result.all_converged, "every benchmark scenario must converge"
        terms = f"{np.median(result.terms):.0f}, {result.terms.max()}"
        print(f"  {k:5d}   {rate:13.0f}   {best:15.0f}   {rate / best:15.1f}   {terms}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-balanced", action="store_true", help="only the three-phase load flow")
    parser.add_argument("--skip-3ph", action="store_true", help="only the balanced load flow")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    if not args.skip_balanced:
        balanced(args)
    if not args.skip_3ph:
        if not args.skip_balanced:
            print()
        three_phase(args)


def balanced(args: argparse.Namespace) -> None:
    random.seed(args.seed)  # the Kerber generator draws line types with `random`
    net = pn.create_kerber_dorfnetz()
    grid = grid_from_pandapower(net)
    solver = HelmSolver(grid)
    rng = np.random.default_rng(args.seed)
    print(f"Kerber Dorfnetz: {grid.n_bus} buses, {grid.n_line} lines, {grid.n_trafo} trafo")
    print(f"pandapower {pp.__version__}, numpy {np.__version__}; {args.seconds:.1f} s each\n")

    p, q = scenarios(grid, 200, rng)
    reference = solver.solve(p[:1], q[:1]).vm_pu[0]
    best = fastest_pandapower(
        "pandapower.runpp", "max |dvm|", PANDAPOWER_SETTINGS, reference,
        lambda settings: pandapower_rate(net, grid, p, q, settings, args.seconds),
    )  # fmt: skip
    compare_batches("HELM", "pandapower", solver, grid, best, rng, args.seconds)


if __name__ == "__main__":
    main()
