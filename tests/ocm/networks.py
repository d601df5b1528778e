"""Test networks built with pandapower, each exercising a set of modelled features."""

from __future__ import annotations

import pandapower as pp


def feature_network() -> pp.pandapowerNet:
    """MV/LV feeder with every supported element and switching state, non-contiguous indices.

    Taps on both sides (ratio, symmetrical with angle, ideal phase shifter), shunts,
    static generators and storages of both signs, constant-impedance loads, load scaling,
    line charging and conductance, parallel lines, open line and trafo switches, a fused and
    an impedance bus-bus switch, out-of-service bus, line, trafo and load, a de-energised
    load-free island and a second energised island with its own external grid.
    """
    net = pp.create_empty_network(name="features", sn_mva=0.5)
    bus = {}

    def add_bus(key, vn_kv, **kwargs):
        bus[key] = pp.create_bus(net, vn_kv, name=f"bus {key}", index=100 + len(bus), **kwargs)

    add_bus("mv", 20.0)
    add_bus("mv2", 20.0)
    for key in ("lv", "a", "b", "c", "d", "e", "f", "g", "h", "fused", "z", "lv2", "i"):
        add_bus(key, 0.4)
    add_bus("off", 0.4, in_service=False)
    add_bus("isl1", 0.4)
    add_bus("isl2", 0.4)
    add_bus("mv_b", 20.0)
    add_bus("lv_b", 0.4, min_vm_pu=0.9, max_vm_pu=1.1)
    add_bus("lv_b2", 0.4)

    pp.create_ext_grid(net, bus["mv"], vm_pu=1.03, va_degree=10.0)
    pp.create_line_from_parameters(
        net, bus["mv"], bus["mv2"], 2.0, 0.16, 0.11, 260, 0.3, g_us_per_km=2.0, index=7
    )
    pp.create_transformer_from_parameters(
        net, bus["mv2"], bus["lv"], 0.63, 20, 0.4, 1.2, 6.0, 1.1, 0.3, shift_degree=150,
        tap_side="hv", tap_neutral=0, tap_step_percent=2.5, tap_pos=-2,
        tap_changer_type="Ratio", index=3,
    )  # fmt: skip
    pp.create_transformer_from_parameters(
        net, bus["mv2"], bus["lv2"], 0.25, 20, 0.41, 1.4, 4.5, 0.6, 0.25, shift_degree=0,
        tap_side="lv", tap_neutral=0, tap_step_percent=1.5, tap_step_degree=30, tap_pos=2,
        tap_changer_type="Symmetrical", max_loading_percent=80, index=5,
    )  # fmt: skip
    pp.create_transformer_from_parameters(
        net, bus["mv2"], bus["i"], 0.25, 20, 0.4, 1.4, 4.5, 0.0, 0.0, shift_degree=0,
        tap_side="hv", tap_neutral=0, tap_step_degree=2.0, tap_pos=3,
        tap_changer_type="Ideal", index=6,
    )  # fmt: skip
    pp.create_transformer_from_parameters(
        net, bus["mv2"], bus["lv"], 0.4, 20, 0.4, 1.3, 4.0, 0.9, 0.2, in_service=False, index=9
    )
    line = "NAYY 4x150 SE"
    pp.create_line(net, bus["lv"], bus["a"], 0.12, line, index=20)
    pp.create_line(net, bus["a"], bus["b"], 0.08, line, parallel=2, index=21)
    pp.create_line_from_parameters(
        net, bus["b"], bus["c"], 0.15, 0.32, 0.08, 250, 0.2, g_us_per_km=1.5, df=0.8, index=22
    )
    pp.create_line(net, bus["c"], bus["d"], 0.1, line, max_loading_percent=60, index=23)
    pp.create_line(net, bus["a"], bus["e"], 0.2, line, index=24)
    pp.create_line(net, bus["e"], bus["f"], 0.05, line, index=25)
    pp.create_line(net, bus["f"], bus["d"], 0.3, line, index=26)  # closes a mesh
    sw_line = pp.create_line(net, bus["d"], bus["g"], 0.1, line, index=27)
    pp.create_switch(net, bus["g"], sw_line, et="l", closed=False)
    pp.create_line(net, bus["c"], bus["g"], 0.12, line, index=28)
    pp.create_line(net, bus["g"], bus["h"], 0.1, line, in_service=False, index=29)
    pp.create_line(net, bus["e"], bus["h"], 0.1, line, index=30)
    pp.create_switch(net, bus["h"], bus["fused"], et="b", closed=True)
    pp.create_switch(net, bus["h"], bus["z"], et="b", closed=True, z_ohm=0.02)
    pp.create_line(net, bus["b"], bus["off"], 0.1, line, index=31)  # ends at an oos bus
    pp.create_line(net, bus["lv2"], bus["i"], 0.1, line, index=32)
    pp.create_line(net, bus["isl1"], bus["isl2"], 0.1, line, index=33)  # de-energised island
    pp.create_switch(net, bus["mv2"], 3, et="t", closed=True)

    pp.create_load(net, bus["a"], 0.020, 0.006, index=40)
    pp.create_load(net, bus["b"], 0.030, 0.010, scaling=0.7, index=41)
    pp.create_load(net, bus["c"], 0.025, 0.004, const_z_p_percent=40, const_z_q_percent=20)
    pp.create_load(net, bus["c"], 0.010, 0.002, const_z_p_percent=100, const_z_q_percent=100)
    pp.create_load(net, bus["d"], 0.040, 0.012, index=44)
    pp.create_load(net, bus["fused"], 0.015, 0.005)
    pp.create_load(net, bus["z"], 0.012, 0.003)
    pp.create_load(net, bus["f"], 0.050, 0.020, in_service=False)
    pp.create_load(net, bus["off"], 0.050, 0.020)  # at an out-of-service bus: inactive
    pp.create_load(net, bus["i"], 0.030, 0.008)
    pp.create_load(net, bus["lv2"], 0.020, -0.004)
    pp.create_sgen(net, bus["e"], 0.045, 0.0, index=60)
    pp.create_sgen(net, bus["d"], 0.010, -0.003, scaling=0.5)
    pp.create_storage(net, bus["f"], p_mw=0.020, max_e_mwh=0.1, q_mvar=0.002)
    pp.create_storage(net, bus["g"], p_mw=-0.015, max_e_mwh=0.1)
    pp.create_shunt(net, bus["b"], q_mvar=-0.010, p_mw=0.0005, vn_kv=0.42, step=2)
    pp.create_shunt(net, bus["lv2"], q_mvar=0.004)

    pp.create_ext_grid(net, bus["mv_b"], vm_pu=0.99, va_degree=-5.0)
    pp.create_transformer(net, bus["mv_b"], bus["lv_b"], "0.25 MVA 20/0.4 kV", index=12)
    pp.create_line(net, bus["lv_b"], bus["lv_b2"], 0.2, "NAYY 4x50 SE", index=34)
    pp.create_load(net, bus["lv_b2"], 0.06, 0.02)
    return net


def meshed_network() -> pp.pandapowerNet:
    """A small meshed LV grid fed by two transformers from one MV bus."""
    net = pp.create_empty_network(name="meshed")
    mv = pp.create_bus(net, 10.0)
    lv = [pp.create_bus(net, 0.4, name=f"n{i}") for i in range(8)]
    pp.create_ext_grid(net, mv, vm_pu=1.02)
    pp.create_transformer(net, mv, lv[0], "0.4 MVA 10/0.4 kV")
    pp.create_transformer(net, mv, lv[4], "0.25 MVA 10/0.4 kV")
    for a, b, km in ((0, 1, 0.1), (1, 2, 0.15), (2, 3, 0.1), (3, 4, 0.2), (4, 5, 0.1), (5, 6, 0.1)):
        pp.create_line(net, lv[a], lv[b], km, "NAYY 4x150 SE")
    pp.create_line(net, lv[6], lv[1], 0.25, "NAYY 4x120 SE")
    pp.create_line(net, lv[2], lv[7], 0.05, "NAYY 4x50 SE")
    for i, p in enumerate((0.0, 0.02, 0.03, 0.025, 0.0, 0.04, 0.015, 0.02)):
        pp.create_load(net, lv[i], p, p * 0.3)
    return net


def radial_feeder(lengths_km, loads_kw, *, pv_kw=None, std_type="NAYY 4x150 SE"):
    """A transformer and one cable feeder: section k ends at the bus that has load k."""
    n = len(lengths_km)
    net = pp.create_empty_network(name="feeder")
    mv = pp.create_bus(net, 20.0)
    pp.create_ext_grid(net, mv)
    buses = pp.create_buses(net, n + 1, 0.4)
    pp.create_transformer(net, mv, buses[0], "0.4 MVA 20/0.4 kV")
    pp.create_lines(net, buses[:-1], buses[1:], list(lengths_km), std_type)
    loads_mw = [p / 1e3 for p in loads_kw]
    pp.create_loads(net, buses[1:], loads_mw, q_mvar=[p / 3 for p in loads_mw])
    if pv_kw is not None:
        pp.create_sgens(net, buses[1:], [p / 1e3 for p in pv_kw])
    return net
