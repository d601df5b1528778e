"""Example networks with flexibilities, for tests, benchmarks and trying ``lec ocm``.

- ``paper_test_feeder``: the low-voltage test feeder of Rao et al. 2021 (Sect. 3, Fig. 6),
  reconstructed: five LV buses on one cable branch from the transformer's busbar, the
  uncontrollable loads UL01 and UL02 and the charging stations CS01 (closer to the
  transformer) and CS02, each 0-22 kW. The paper gives no line data; a 250 kVA transformer and
  4 x 100 m of NAYY 4x50 SE make the voltage limit bind with both chargers at full power.
- ``place_flexibilities``: adds chargers, batteries, PV and heat pumps to any pandapower LV
  network at random buses, some of them at feeder ends (seeded, for unseen placements).
- ``cigre_lv_with_flexibilities``, ``kerber_dorfnetz_with_flexibilities`` and
  ``kerber_vorstadtnetz_with_flexibilities``: pandapower's CIGRE LV network and Kerber village
  and suburban (294 buses) feeders with placed flexibilities.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandas as pd

from ocm.seeding import seeded_python_random

PAPER_CHARGER_KW = 22.0
POWER_FACTOR = 0.95
# kind: (element, hardware limits in the element's own convention in kW, choices of size)
FLEXIBILITY_KINDS = {
    "charger": ("load", (11.0, 22.0)),
    "battery": ("storage", (10.0, 20.0, 30.0)),
    "pv": ("sgen", (10.0, 20.0, 30.0)),
    "heat pump": ("load", (3.0, 6.0, 9.0)),
}


def paper_test_feeder(ul01_kw: float = 8.0, ul02_kw: float = 8.0) -> pp.pandapowerNet:
    """The paper's test feeder with the uncontrollable loads at the given active power
    (power factor 0.95 inductive); the chargers are the flexibilities (loads 2 and 3)."""
    net = pp.create_empty_network(name="Rao 2021 LV test feeder")
    mv = pp.create_bus(net, 20.0, name="MV")
    pp.create_ext_grid(net, mv, vm_pu=1.0)
    buses = [pp.create_bus(net, 0.4, name=f"Bus{k:02d}") for k in range(1, 6)]
    pp.create_transformer(net, mv, buses[0], "0.25 MVA 20/0.4 kV", name="T1")
    for a, b in itertools.pairwise(buses):
        pp.create_line(net, a, b, 0.1, "NAYY 4x50 SE")
    tan_phi = np.tan(np.arccos(POWER_FACTOR))
    for name, bus, p_kw in (("UL01", buses[1], ul01_kw), ("UL02", buses[4], ul02_kw)):
        pp.create_load(net, bus, p_kw / 1e3, p_kw / 1e3 * tan_phi, name=name)
    for name, bus in (("CS01", buses[2]), ("CS02", buses[3])):
        pp.create_load(
            net, bus, 0.0, name=name, controllable=True, min_p_mw=0.0, max_p_mw=PAPER_CHARGER_KW / 1e3
        )
    return net


def place_flexibilities(net: pp.pandapowerNet, count: int, seed: int, feeder_ends: int = 3) -> list[str]:
    """Adds ``count`` flexibilities (kinds in turn: charger, battery, PV, heat pump) at random
    LV buses, ``feeder_ends`` of them at feeder ends; returns their keys (``"load.7"``...).

    Chargers and heat pumps consume (0 to their size), batteries charge and discharge (±size),
    PV generates (0 to its size); sizes are drawn from ``FLEXIBILITY_KINDS``.
    """
    rng = np.random.default_rng(seed)
    lv = net.bus.index[(net.bus["vn_kv"] < 1.0) & net.bus["in_service"]]
    ends = _feeder_ends(net, lv)
    picked = list(rng.choice(ends, size=min(feeder_ends, len(ends), count), replace=False))
    others = np.setdiff1d(lv, picked)
    picked += list(rng.choice(others, size=count - len(picked), replace=len(others) < count - len(picked)))
    keys = []
    kinds = list(FLEXIBILITY_KINDS)
    for k, bus in enumerate(picked):
        kind = kinds[k % len(kinds)]
        element, sizes = FLEXIBILITY_KINDS[kind]
        size_mw = float(rng.choice(sizes)) / 1e3
        name = f"{kind} {k + 1}"
        if element == "load":
            index = pp.create_load(
                net, bus, 0.0, name=name, controllable=True, min_p_mw=0.0, max_p_mw=size_mw
            )
        elif element == "storage":
            index = pp.create_storage(
                net, bus, 0.0, max_e_mwh=2 * size_mw, name=name, controllable=True,
                min_p_mw=-size_mw, max_p_mw=size_mw,
            )  # fmt: skip
        else:
            index = pp.create_sgen(
                net, bus, 0.0, name=name, controllable=True, min_p_mw=0.0, max_p_mw=size_mw
            )
        keys.append(f"{element}.{index}")
    return keys


def cigre_lv_with_flexibilities(count: int = 10, seed: int = 1, load_scaling: float = 0.5):
    """CIGRE LV (pandapower) with ``count`` placed flexibilities. Its loads are the coincident
    peak, which already breaches 0.95 pu, so they are scaled by ``load_scaling``."""
    net = pn.create_cigre_network_lv()
    net.load["scaling"] = load_scaling
    place_flexibilities(net, count, seed)
    return net


def kerber_dorfnetz_with_flexibilities(count: int = 10, seed: int = 1, load_scaling: float = 1.0):
    """pandapower's Kerber Dorfnetz (116 buses) with ``count`` placed flexibilities; its random
    line types are drawn with ``seed`` too."""
    with seeded_python_random(seed):
        net = pn.create_kerber_dorfnetz()
    net.load["scaling"] = load_scaling
    place_flexibilities(net, count, seed)
    return net


def _feeder_ends(net: pp.pandapowerNet, lv: pd.Index) -> np.ndarray:
    """LV buses with exactly one in-service line."""
    lines = net.line[net.line["in_service"]]
    degree = pd.concat([lines["from_bus"], lines["to_bus"]]).value_counts()
    return np.array([b for b in lv if degree.get(b, 0) == 1])


def kerber_vorstadtnetz_with_flexibilities(count: int = 50, seed: int = 1, load_scaling: float = 1.0):
    """pandapower's Kerber Vorstadtnetz, cable variant 1 (294 buses: a suburban feeder of 146
    house connections), with ``count`` placed flexibilities; its random line types are drawn
    with ``seed`` too."""
    with seeded_python_random(seed):
        net = pn.create_kerber_vorstadtnetz_kabel_1()
    net.load["scaling"] = load_scaling
    place_flexibilities(net, count, seed)
    return net
