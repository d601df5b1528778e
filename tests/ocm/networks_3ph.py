"""Unbalanced test networks for the three-phase load flow, built with pandapower and ready for
``pandapower.runpp_3ph`` (zero-sequence data on lines, transformers and external grids).

pandapower's three-phase load flow models the neutral as earth (sequence components), supports
the transformer vector groups Dyn, YNyn and Yzn (written without clock number; the angle is
``shift_degree``), and reads ``load``, ``sgen``, ``asymmetric_load`` and ``asymmetric_sgen``
only when their ``type`` is "wye" or "delta" (a delta element's p_a/p_b/p_c are the phase pairs
ab, bc, ca): ``pp.create_sgen`` writes type None, which runpp_3ph silently skips, so the sgens
here are created with type "wye". Storages and shunts are left out of these nets.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandapower.topology as top
import pandas as pd

from ocm.seeding import seeded_python_random

PHASES = ("a", "b", "c")
# cables without zero-sequence data get r0 = 4 r, x0 = 4 x (neutral conductor and earth return)
R0_PER_R = 4.0
X0_PER_X = 4.0
CHARGER_KW = 7.4


@dataclass(frozen=True)
class Reference3ph:
    """``pandapower.runpp_3ph`` results of a net."""

    bus: pd.DataFrame  # res_bus_3ph
    line: pd.DataFrame  # res_line_3ph
    trafo: pd.DataFrame  # res_trafo_3ph


def run_pandapower_3ph(net, polish_pu: float = 1e-9, max_reruns: int = 15) -> Reference3ph:
    """pandapower's three-phase load flow of a copy of ``net``; raises
    ``pandapower.powerflow.LoadflowNotConverged`` when it finds no solution.

    runpp_3ph stops its sequence iteration at a fixed power mismatch of 3e-8 MVA, which leaves
    the phase voltages some 1e-7 pu from the solution of its equations; each rerun from its own
    results (``init="results"``) shrinks that about fivefold. It is rerun until no phase voltage
    moves by more than ``polish_pu`` (0: no reruns), except for nets with open line switches,
    which runpp_3ph cannot start from results.
    """
    net = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp_3ph(net, tolerance_mva=1e-11, max_iteration=100)
        voltage = phase_voltages(net.res_bus_3ph)
        for _ in range(max_reruns if polish_pu > 0 else 0):
            try:
                pp.runpp_3ph(net, tolerance_mva=1e-11, max_iteration=100, init="results")
            except KeyError:  # pandapower 3.5 cannot start from results with open line switches
                break  # (it fails before touching the results: they stay unpolished)
            previous, voltage = voltage, phase_voltages(net.res_bus_3ph)
            if np.nanmax(np.abs(voltage - previous), initial=0) <= polish_pu:
                break
    return Reference3ph(net.res_bus_3ph.copy(), net.res_line_3ph.copy(), net.res_trafo_3ph.copy())


def phase_voltages(res_bus_3ph: pd.DataFrame) -> np.ndarray:
    """(n_bus, 3) complex phase voltages in pu of a res_bus_3ph table."""
    return np.stack(
        [
            res_bus_3ph[f"vm_{x}_pu"].to_numpy(float) * np.exp(1j * np.deg2rad(res_bus_3ph[f"va_{x}_degree"]))
            for x in PHASES
        ],
        axis=1,
    )


def add_zero_sequence_data(
    net,
    vector_group: str = "Dyn",
    *,
    s_sc_mva: float = 100.0,
    rx: float = 0.1,
    x0x: float = 1.0,
    r0x0: float = 0.1,
    mag0_percent: float = 100.0,
    mag0_rx: float = 0.0,
    si0_hv_partial: float = 0.9,
):
    """Zero-sequence parameters wherever ``net`` lacks them (in place; returns ``net``).

    Lines: pandapower's standard-type values if any, else r0 = 4 r, x0 = 4 x, c0 = c.
    Transformers: ``vector_group`` and vk0/vkr0 = vk/vkr. External grids: short-circuit power
    and impedance ratios.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.add_zero_impedance_parameters(net)
    line = net.line
    for zero, positive, factor in (
        ("r0_ohm_per_km", "r_ohm_per_km", R0_PER_R),
        ("x0_ohm_per_km", "x_ohm_per_km", X0_PER_X),
        ("c0_nf_per_km", "c_nf_per_km", 1.0),
    ):
        values = pd.to_numeric(line[zero], errors="coerce")
        line[zero] = values.where(values.notna(), line[positive].astype(float) * factor).astype(float)
    line["g0_us_per_km"] = pd.to_numeric(line.get("g0_us_per_km"), errors="coerce").fillna(0.0).astype(float)
    trafo = net.trafo
    trafo["vector_group"] = vector_group
    trafo["vk0_percent"] = trafo["vk_percent"].astype(float)
    trafo["vkr0_percent"] = trafo["vkr_percent"].astype(float)
    trafo["mag0_percent"] = float(mag0_percent)
    trafo["mag0_rx"] = float(mag0_rx)
    trafo["si0_hv_partial"] = float(si0_hv_partial)
    ext_grid = net.ext_grid
    ext_grid["s_sc_max_mva"] = float(s_sc_mva)
    ext_grid["rx_max"] = float(rx)
    ext_grid["x0x_max"] = float(x0x)
    ext_grid["r0x0_max"] = float(r0x0)
    return net


def single_phase(net, bus: int, phase: str, p_mw: float, q_mvar: float = 0.0, *, sgen=False, **kwargs):
    """An asymmetric load (or generator, ``sgen=True``) on one phase of ``bus``."""
    powers = {f"p_{phase}_mw": p_mw, f"q_{phase}_mvar": q_mvar}
    if sgen:
        return pp.create_asymmetric_sgen(net, bus, **powers, **kwargs)
    return pp.create_asymmetric_load(net, bus, **powers, **kwargs)


def replace_by_single_phase(net, load: int, phase: str) -> int:
    """Moves balanced load ``load`` onto one phase (same total power); returns the new index."""
    row = net.load.loc[load]
    index = single_phase(net, int(row["bus"]), phase, row["p_mw"], row["q_mvar"], name=f"{row['name']} 1ph")
    net.asymmetric_load.at[index, "scaling"] = row["scaling"]
    net.load.drop(load, inplace=True)
    return index


def cigre_lv_unbalanced():
    """CIGRE LV (residential, industrial and commercial feeders) with a Dyn trafo data set, four
    of its loads on single phases, one split 40/33/27 over the phases, one delta load and three
    single-phase PV generators."""
    net = pn.create_cigre_network_lv()
    net.name = "CIGRE LV unbalanced"
    add_zero_sequence_data(net, "Dyn", s_sc_mva=100.0, rx=1.0, x0x=1.0, r0x0=0.1)
    for load, phase in ((1, "a"), (12, "b"), (13, "c"), (14, "a")):
        replace_by_single_phase(net, load, phase)
    row = net.load.loc[2]
    shares = dict(zip(PHASES, (0.4, 0.33, 0.27), strict=True))
    pp.create_asymmetric_load(
        net, int(row["bus"]), name="split load",
        **{f"p_{x}_mw": row["p_mw"] * s for x, s in shares.items()},
        **{f"q_{x}_mvar": row["q_mvar"] * s for x, s in shares.items()},
    )  # fmt: skip
    net.load.drop(2, inplace=True)
    bus = dict(zip(net.bus["name"], net.bus.index, strict=True))
    pp.create_asymmetric_load(
        net,
        bus["Bus C13"],
        p_a_mw=0.006,
        q_a_mvar=0.002,
        p_b_mw=0.0,
        p_c_mw=0.003,
        type="delta",
        name="delta",
    )
    single_phase(net, bus["Bus R18"], "a", 0.005, sgen=True, name="PV R18")
    single_phase(net, bus["Bus C14"], "b", 0.004, -0.001, sgen=True, name="PV C14")
    single_phase(net, bus["Bus I2"], "c", 0.010, sgen=True, name="PV I2")
    return net


def feeder_end(net, start_bus: int) -> int:
    """The bus farthest (along the lines) from ``start_bus``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distance = top.calc_distance_to_bus(net, start_bus)
    return int(distance.idxmax())


def kerber_unbalanced(kind: str = "landnetz"):
    """A Kerber feeder (``landnetz``: Landnetz Kabel 1, ``vorstadtnetz``: Vorstadtnetz Kabel 1)
    with a Dyn trafo, every third load single-phase (cycling a, b, c), two 7.4 kW single-phase
    chargers on phase a at the feeder's far end and single-phase PV on phase b."""
    make = {
        "landnetz": pn.create_kerber_landnetz_kabel_1,
        "vorstadtnetz": pn.create_kerber_vorstadtnetz_kabel_1,
    }
    with seeded_python_random(7), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = make[kind]()
    net.name = f"Kerber {kind} unbalanced"
    add_zero_sequence_data(net, "Dyn", s_sc_mva=200.0, rx=0.1, si0_hv_partial=0.8)
    for k, load in enumerate(net.load.index[::3]):
        replace_by_single_phase(net, load, PHASES[k % 3])
    lv_busbar = int(net.trafo.at[net.trafo.index[0], "lv_bus"])
    end = feeder_end(net, lv_busbar)
    for k in range(2):
        single_phase(net, end, "a", CHARGER_KW / 1e3, name=f"charger {k + 1}")
    loads = net.load["bus"].to_numpy()
    for bus in loads[1::4]:
        single_phase(net, int(bus), "b", 0.004, sgen=True, name=f"PV {bus}")
    return net


def random_unbalanced_feeder(seed: int, n_bus: tuple[int, int] = (10, 60)):
    """A random radial LV feeder for seed ``seed``.

    20 kV external grid, an MV cable to a 0.4 MVA 20/0.4 kV transformer (Dyn, one in four
    YNyn), 10-60 LV buses in a branching tree of NAYY cables, and a mix of balanced loads,
    single- and three-phase wye and delta asymmetric loads, single-phase asymmetric and balanced
    static generators; loads at the MV bus next to the external grid and at the LV busbar.
    """
    rng = np.random.default_rng(seed)
    net = _empty_network(f"random unbalanced feeder {seed}")
    slack = pp.create_bus(net, 20.0, name="MV slack")
    mv = pp.create_bus(net, 20.0, name="MV")
    pp.create_ext_grid(net, slack, vm_pu=float(rng.uniform(0.99, 1.03)), va_degree=float(rng.uniform(-5, 5)))
    mv_cable = str(rng.choice(["NA2XS2Y 1x95 RM/25 12/20 kV", "NA2XS2Y 1x150 RM/25 12/20 kV"]))
    pp.create_line(net, slack, mv, float(rng.uniform(0.5, 3.0)), mv_cable, name="MV cable")
    busbar = pp.create_bus(net, 0.4, name="LV busbar")
    vector_group = "YNyn" if rng.random() < 0.25 else "Dyn"
    pp.create_transformer(net, mv, busbar, "0.4 MVA 20/0.4 kV", tap_pos=int(rng.integers(-2, 3)))
    if vector_group == "YNyn":
        net.trafo["shift_degree"] = 0.0
    n_lv = int(rng.integers(n_bus[0], n_bus[1] + 1)) - 1
    lv = [busbar, *range(busbar + 1, busbar + 1 + n_lv)]
    parents, lengths, types = [], [], []
    cables = ["NAYY 4x150 SE", "NAYY 4x120 SE", "NAYY 4x50 SE"]
    for k in range(n_lv):
        # mostly extend the newest branch, sometimes branch off an earlier bus
        parents.append(lv[k] if rng.random() < 0.7 else lv[int(rng.integers(0, k + 1))])
        lengths.append(float(rng.uniform(0.02, 0.08)))
        types.append(str(rng.choice(cables, p=[0.4, 0.3, 0.3])))
    pp.create_buses(net, n_lv, 0.4, index=lv[1:], name=[f"LV {k + 1}" for k in range(n_lv)])
    pp.create_lines(net, parents, lv[1:], lengths, types)
    add_zero_sequence_data(
        net,
        vector_group,
        s_sc_mva=float(rng.uniform(50, 500)),
        rx=float(rng.uniform(0.1, 0.5)),
        x0x=float(rng.uniform(0.8, 3.0)),
        r0x0=float(rng.uniform(0.1, 1.0)),
        mag0_percent=float(rng.uniform(20, 100)),
        mag0_rx=float(rng.choice([0.0, 0.1])),
        si0_hv_partial=float(rng.uniform(0.5, 0.95)),
    )
    # a budget that keeps the feeder in operation: about 1.5 kW per bus on average
    loads, sgens = [], []
    for bus in lv[1:]:
        kind = rng.choice(["none", "load", "1ph", "3ph", "delta"], p=[0.15, 0.3, 0.3, 0.15, 0.1])
        kw = float(rng.uniform(1.0, 4.0))
        if kind == "load":
            loads.append((bus, kw / 1e3, kw * 0.3 / 1e3))
        elif kind == "1ph":
            single_phase(net, bus, str(rng.choice(PHASES)), kw / 1e3, kw * float(rng.uniform(0, 0.4)) / 1e3)
        elif kind in ("3ph", "delta"):
            share = rng.dirichlet(np.ones(3))
            pp.create_asymmetric_load(
                net, bus, type="wye" if kind == "3ph" else "delta",
                **{f"p_{x}_mw": kw * s / 1e3 for x, s in zip(PHASES, share, strict=True)},
                **{f"q_{x}_mvar": kw * s * 0.25 / 1e3 for x, s in zip(PHASES, share, strict=True)},
            )  # fmt: skip
        generation = rng.random()
        if generation < 0.15:
            single_phase(net, bus, str(rng.choice(PHASES)), float(rng.uniform(2, 5)) / 1e3, sgen=True)
        elif generation < 0.25:
            sgens.append((bus, float(rng.uniform(3, 10)) / 1e3, float(rng.uniform(-1, 0)) / 1e3))
    loads += [(slack, 0.2, 0.05), (busbar, 0.01, 0.003)]  # at the MV slack bus and the LV busbar
    bus, p, q = zip(*loads, strict=True)
    pp.create_loads(net, list(bus), list(p), q_mvar=list(q))
    if sgens:
        bus, p, q = zip(*sgens, strict=True)
        pp.create_sgens(net, list(bus), list(p), q_mvar=list(q), type="wye")  # runpp_3ph skips type None
    single_phase(net, busbar, "c", 0.003, name="busbar 1ph")
    return net


_EMPTY = {}


def _empty_network(name: str):
    """``pp.create_empty_network`` (a copy of one made once: creating it takes 0.1 s)."""
    if "net" not in _EMPTY:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _EMPTY["net"] = pp.create_empty_network()
    net = copy.deepcopy(_EMPTY["net"])
    net.name = name
    return net


def collapsing_feeder():
    """A long weak cable feeder whose far end carries a 45 kW single-phase load: well beyond the
    largest single-phase load it can supply (runpp_3ph does not converge, there is no solution)."""
    net = pp.create_empty_network(name="collapsing single-phase feeder")
    mv = pp.create_bus(net, 20.0)
    pp.create_ext_grid(net, mv)
    buses = [pp.create_bus(net, 0.4, name=f"LV {k}") for k in range(6)]
    pp.create_transformer(net, mv, buses[0], "0.4 MVA 20/0.4 kV")
    for a, b in itertools.pairwise(buses):
        pp.create_line(net, a, b, 0.2, "NAYY 4x50 SE")
    add_zero_sequence_data(net, "Dyn")
    pp.create_load(net, buses[2], 0.01, 0.003)
    single_phase(net, buses[-1], "b", 0.045, 0.01, name="heavy 1ph load")
    return net
