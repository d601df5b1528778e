"""Per-unit pi models of lines, two-winding transformers and impedance switches.

The formulas are pandapower's (``build_branch.py``, ``runpp`` defaults: T-model transformers,
voltage angles and phase shifts considered), so that results agree with ``pandapower.runpp``.
A branch is described by its series impedance ``z_series``, the shunt admittances at its two
ends and the complex tap ``t = ratio * exp(j shift)`` seen from the from (HV) side::

    I_from = (1/z + y_shunt_from) / |t|^2 * V_from - (1/z) / conj(t) * V_to
    I_to   = -(1/z) / t * V_from + (1/z + y_shunt_to) * V_to

All quantities are per unit on the network's ``sn_mva`` and the nominal voltages of the buses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ocm.grid.errors import NetworkError

SWITCH_RX_RATIO = 2.0  # pandapower's default r/x ratio of bus-bus switches with z_ohm > 0


@dataclass(frozen=True)
class BranchModel:
    """Pi equivalent of a set of branches (arrays of equal length, per unit)."""

    z_series: np.ndarray
    y_shunt_from: np.ndarray
    y_shunt_to: np.ndarray
    tap: np.ndarray


def line_model(line: pd.DataFrame, base_kv: np.ndarray, sn_mva: float, f_hz: float) -> BranchModel:
    """Pi model of lines: r, x, c, g per km times length, ``parallel`` systems in parallel."""
    length = line["length_km"].to_numpy(float)
    parallel = line["parallel"].to_numpy(float)
    base_r = base_kv**2 / sn_mva
    r = line["r_ohm_per_km"].to_numpy(float) * length / base_r / parallel
    x = line["x_ohm_per_km"].to_numpy(float) * length / base_r / parallel
    b = 2 * f_hz * np.pi * line["c_nf_per_km"].to_numpy(float) * 1e-9 * base_r * length * parallel
    g = line["g_us_per_km"].to_numpy(float) * 1e-6 * base_r * length * parallel
    half_shunt = (g + 1j * b) / 2
    return BranchModel(r + 1j * x, half_shunt, half_shunt.copy(), np.ones(len(line), complex))


def impedance_switch_model(z_ohm: np.ndarray, base_kv: np.ndarray, sn_mva: float) -> BranchModel:
    """Closed bus-bus switches with ``z_ohm > 0``, split into r and x by pandapower's ratio."""
    z_pu = z_ohm / (base_kv**2 / sn_mva)
    norm = np.sqrt(1 + SWITCH_RX_RATIO**2)
    zeros = np.zeros(len(z_pu), complex)
    z_series = z_pu * (SWITCH_RX_RATIO / norm + 1j / norm)
    return BranchModel(z_series, zeros, zeros.copy(), np.ones(len(z_pu), complex))


def trafo_model(
    trafo: pd.DataFrame, base_kv_hv: np.ndarray, base_kv_lv: np.ndarray, sn_mva: float
) -> BranchModel:
    """T model of two-winding transformers converted to a pi model, taps and phase shift."""
    vn_hv, vn_lv, shift_degree = trafo_tap_voltages(trafo)
    ratio = (vn_hv / vn_lv) / (base_kv_hv / base_kv_lv)
    parallel = trafo["parallel"].to_numpy(float)
    sn_trafo = trafo["sn_mva"].to_numpy(float)

    # short-circuit impedance, referred to the (tapped) low-voltage side
    tap_lv = (vn_lv / base_kv_lv) ** 2 * sn_mva
    z_sc = trafo["vk_percent"].to_numpy(float) / 100 / sn_trafo * tap_lv
    r_sc = trafo["vkr_percent"].to_numpy(float) / 100 / sn_trafo * tap_lv
    with np.errstate(invalid="ignore"):
        x_sc = np.sign(z_sc) * np.sqrt(z_sc**2 - r_sc**2)
    r, x = r_sc / parallel, x_sc / parallel

    # magnetising admittance from no-load losses and current
    vn_lv_rated = trafo["vn_lv_kv"].to_numpy(float)
    pfe_mw = trafo["pfe_kw"].to_numpy(float) * 1e-3
    ym_mva = trafo["i0_percent"].to_numpy(float) / 100 * sn_trafo
    b_mva = -np.sqrt(np.maximum(ym_mva**2 - pfe_mw**2, 0))
    to_pu = base_kv_lv**2 / sn_mva / vn_lv_rated**2 * parallel / (vn_lv / vn_lv_rated) ** 2
    y_magnetising = (pfe_mw + 1j * b_mva) * to_pu

    z_series, y_from, y_to = _t_to_pi(r + 1j * x, y_magnetising, _leakage_split(trafo))
    return BranchModel(z_series, y_from, y_to, ratio * np.exp(1j * np.deg2rad(shift_degree)))


def _leakage_split(trafo: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Share of the leakage resistance and reactance on the HV side of the T (default 0.5)."""
    shares = []
    for column in ("leakage_resistance_ratio_hv", "leakage_reactance_ratio_hv"):
        values = trafo[column] if column in trafo else pd.Series(0.5, index=trafo.index)
        shares.append(values.astype(float).fillna(0.5).to_numpy())
    return shares[0], shares[1]


def _t_to_pi(
    z_sc: np.ndarray, y_m: np.ndarray, split: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Star-delta conversion of the T circuit (pandapower's ``_wye_delta``)."""
    z_series = z_sc.copy()
    y_from = np.zeros(len(z_sc), complex)
    y_to = np.zeros(len(z_sc), complex)
    t = y_m != 0
    r_share, x_share = split
    z_hv = z_sc.real[t] * r_share[t] + 1j * z_sc.imag[t] * x_share[t]
    z_lv = z_sc.real[t] * (1 - r_share[t]) + 1j * z_sc.imag[t] * (1 - x_share[t])
    z_m = 1 / y_m[t]
    z_sum = z_hv * z_lv + z_hv * z_m + z_lv * z_m
    z_series[t] = z_sum / z_m
    y_from[t] = z_lv / z_sum
    y_to[t] = z_hv / z_sum
    return z_series, y_from, y_to


def trafo_tap_voltages(trafo: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rated voltages adjusted to the tap positions, and the total phase shift in degrees.

    Follows pandapower 3: a tap changer acts only if ``tap_changer_type`` is ``"Ratio"``,
    ``"Symmetrical"`` (voltage change, possibly at an angle ``tap_step_degree``) or ``"Ideal"``
    (pure phase shifter); nets of older versions use ``tap_phase_shifter`` instead.
    """
    vn_hv = trafo["vn_hv_kv"].to_numpy(float).copy()
    vn_lv = trafo["vn_lv_kv"].to_numpy(float).copy()
    shift = trafo["shift_degree"].to_numpy(float).copy()
    for t in ("", "2"):
        if f"tap{t}_pos" not in trafo:
            continue
        side = trafo.get(f"tap{t}_side", pd.Series(None, index=trafo.index))
        side = side.astype(object).where(side.notna(), "").to_numpy()
        if f"tap{t}_changer_type" in trafo:
            kind = trafo[f"tap{t}_changer_type"].astype(object)
            kind = kind.where(kind.notna(), "").to_numpy()
            ideal = kind == "Ideal"
            stepped = (kind == "Ratio") | (kind == "Symmetrical")
        elif f"tap{t}_phase_shifter" in trafo:
            ideal = trafo[f"tap{t}_phase_shifter"].fillna(False).to_numpy(bool)
            stepped = ~ideal
        else:
            continue
        for side_name, vn, direction in (("hv", vn_hv, 1.0), ("lv", vn_lv, -1.0)):
            on_side = side == side_name
            _apply_tap(trafo, t, ideal & on_side, stepped & on_side, direction, vn, shift)
    return vn_hv, vn_lv, shift


def _apply_tap(
    trafo: pd.DataFrame,
    t: str,
    ideal: np.ndarray,
    stepped: np.ndarray,
    direction: float,
    vn: np.ndarray,
    shift: np.ndarray,
) -> None:
    """Adds one tap changer's effect to ``vn`` and ``shift`` in place (pandapower's formulas)."""
    if not (ideal.any() or stepped.any()):
        return
    tap_diff = _column(trafo, f"tap{t}_pos") - _column(trafo, f"tap{t}_neutral")
    step_percent = _column(trafo, f"tap{t}_step_percent")
    step_degree = _column(trafo, f"tap{t}_step_degree")
    if ideal.any():
        degree_set = np.nan_to_num(step_degree) != 0
        percent_set = np.nan_to_num(step_percent) != 0
        both = ideal & degree_set & percent_set
        if both.any():
            raise NetworkError(
                f"trafo {_ids(trafo, both)}: an ideal phase shifter needs tap{t}_step_degree "
                f"or tap{t}_step_percent, not both"
            )
        with np.errstate(invalid="ignore"):
            by_percent = 2 * np.rad2deg(np.arcsin(tap_diff * step_percent / 200))
        ideal_shift = np.where(degree_set, tap_diff * step_degree, by_percent)
        shift[ideal] += direction * ideal_shift[ideal]
    if stepped.any():
        du = vn * np.nan_to_num(step_percent * tap_diff / 100)
        angle = np.deg2rad(np.nan_to_num(step_degree))
        along, across = vn + du * np.cos(angle), du * np.sin(angle)
        shift[stepped] += np.rad2deg(np.arctan(direction * across / along))[stepped]
        vn[stepped] = np.hypot(along, across)[stepped]


def _column(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(float)


def _ids(table: pd.DataFrame, mask: np.ndarray) -> list:
    return table.index[mask].tolist()
