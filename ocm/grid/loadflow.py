"""Load flow of a network as given (its base case), with results indexed like pandapower's
``res_bus``, ``res_line`` and ``res_trafo`` tables, and the three-phase (unbalanced) load flow
with results like ``res_bus_3ph``, ``res_line_3ph`` and ``res_trafo_3ph``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ocm.grid.helm import HelmResult, HelmSolver
from ocm.grid.helm_3ph import Helm3phResult
from ocm.grid.model import Grid
from ocm.grid.three_phase import Grid3ph


@dataclass(frozen=True)
class NetworkResult:
    """One load flow in pandapower's element indices.

    ``bus`` has every bus of the network (NaN for de-energised ones) with ``vm_pu``,
    ``va_degree`` and the voltage limits; ``line`` and ``trafo`` have every branch with
    ``loading_percent`` and ``max_loading_percent``. Without a solution all results are NaN
    and ``message`` says why.
    """

    converged: bool
    message: str
    bus: pd.DataFrame
    line: pd.DataFrame
    trafo: pd.DataFrame
    terms: int
    newton_iterations: int
    max_mismatch_pu: float

    def to_json_dict(self) -> dict:
        """``{"converged", "bus", "line", "trafo"}`` with string keys; NaN becomes null.

        A ``"message"`` key is added when there is no solution.
        """
        data = {
            "converged": self.converged,
            "bus": _records(self.bus, ["vm_pu", "va_degree"]),
            "line": _records(self.line, ["loading_percent"]),
            "trafo": _records(self.trafo, ["loading_percent"]),
        }
        if not self.converged:
            data["message"] = self.message
        return data

    def voltage_violations(self) -> pd.DataFrame:
        """Buses whose voltage is outside [min_vm_pu, max_vm_pu]."""
        bus = self.bus
        return bus[(bus["vm_pu"] < bus["min_vm_pu"]) | (bus["vm_pu"] > bus["max_vm_pu"])]

    def overloads(self, element: str) -> pd.DataFrame:
        """Lines (``"line"``) or trafos (``"trafo"``) loaded above their max_loading_percent."""
        table = getattr(self, element)
        return table[table["loading_percent"] > table["max_loading_percent"]]


def run_loadflow(grid: Grid, solver: HelmSolver | None = None) -> NetworkResult:
    """HELM load flow of the grid's own loads (``base_load_kw``/``base_load_kvar``)."""
    solver = solver or HelmSolver(grid)
    result = solver.solve(grid.base_load_kw, grid.base_load_kvar)
    return network_result(grid, result, scenario=0)


def network_result(grid: Grid, result: HelmResult, scenario: int = 0) -> NetworkResult:
    """Scenario ``scenario`` of a batched result, in pandapower's element indices."""
    bus = pd.DataFrame(
        {"name": grid.all_bus_names, "vm_pu": np.nan, "va_degree": np.nan},
        index=pd.Index(grid.all_bus_ids, name="bus"),
    )
    bus["min_vm_pu"] = pd.Series(grid.min_vm_pu, index=grid.bus_ids)
    bus["max_vm_pu"] = pd.Series(grid.max_vm_pu, index=grid.bus_ids)
    bus.loc[grid.bus_ids, "vm_pu"] = result.vm_pu[scenario]
    bus.loc[grid.bus_ids, "va_degree"] = result.va_degree[scenario]
    line = pd.DataFrame(
        {
            "name": grid.line_names,
            "loading_percent": result.line_loading_percent[scenario],
            "max_loading_percent": grid.line_max_loading_percent,
        },
        index=pd.Index(grid.line_ids, name="line"),
    )
    trafo = pd.DataFrame(
        {
            "name": grid.trafo_names,
            "loading_percent": result.trafo_loading_percent[scenario],
            "max_loading_percent": grid.trafo_max_loading_percent,
        },
        index=pd.Index(grid.trafo_ids, name="trafo"),
    )
    return NetworkResult(
        converged=bool(result.converged[scenario]),
        message=result.reasons[scenario],
        bus=bus,
        line=line,
        trafo=trafo,
        terms=int(result.terms[scenario]),
        newton_iterations=int(result.newton_iterations[scenario]),
        max_mismatch_pu=float(result.max_mismatch_pu[scenario]),
    )


def _records(table: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, float | None]]:
    return {
        str(index): {c: _number(row[c]) for c in columns}
        for index, row in zip(table.index, table[columns].to_dict("records"), strict=True)
    }


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


PHASES = ("a", "b", "c")
BUS_3PH_COLUMNS = [
    *(f"{quantity}_{x}_{unit}" for x in PHASES for quantity, unit in (("vm", "pu"), ("va", "degree"))),
    "unbalance_percent",
]
LINE_3PH_COLUMNS = [
    *(f"i_{x}_{end}_ka" for x in PHASES for end in ("from", "to")),
    *(f"i_{x}_ka" for x in PHASES),
    "i_n_from_ka",
    "i_n_to_ka",
    "i_n_ka",
    *(f"loading_{x}_percent" for x in PHASES),
    "loading_percent",
]
TRAFO_3PH_COLUMNS = [*(f"loading_{x}_percent" for x in PHASES), "loading_percent"]


@dataclass(frozen=True)
class NetworkResult3ph:
    """One three-phase load flow in pandapower's element indices and ``res_*_3ph`` names.

    ``bus`` has every bus (NaN for de-energised ones) with ``vm_a_pu``, ``va_a_degree`` … for
    phases a, b, c, ``unbalance_percent`` (|V2|/|V1|) and the voltage limits; ``line`` has the
    phase currents at both ends and the larger of both (``i_a_from_ka`` … ``i_a_ka``), the
    neutral (earth return) current ``i_n_ka`` and the loadings per phase and overall (the
    largest phase) with ``max_loading_percent``; ``trafo`` the loadings per phase and overall.
    Without a solution all results are NaN and ``message`` says why.
    """

    converged: bool
    message: str
    bus: pd.DataFrame
    line: pd.DataFrame
    trafo: pd.DataFrame
    terms: int
    max_mismatch_pu: float

    def to_json_dict(self) -> dict:
        """``{"converged", "bus", "line", "trafo"}`` with string keys and pandapower's
        ``res_*_3ph`` names; NaN becomes null. A ``"message"`` key is added without a solution."""
        data = {
            "converged": self.converged,
            "bus": _records(self.bus, BUS_3PH_COLUMNS),
            "line": _records(self.line, LINE_3PH_COLUMNS),
            "trafo": _records(self.trafo, TRAFO_3PH_COLUMNS),
        }
        if not self.converged:
            data["message"] = self.message
        return data

    def phase_voltages(self) -> pd.DataFrame:
        """One row per energised bus and phase: ``bus``, ``phase``, ``vm_pu`` and the limits."""
        bus = self.bus.dropna(subset=[f"vm_{x}_pu" for x in PHASES], how="all")
        rows = [
            pd.DataFrame(
                {
                    "bus": bus.index,
                    "name": bus["name"].to_numpy(),
                    "phase": x,
                    "vm_pu": bus[f"vm_{x}_pu"].to_numpy(),
                    "min_vm_pu": bus["min_vm_pu"].to_numpy(),
                    "max_vm_pu": bus["max_vm_pu"].to_numpy(),
                }
            )
            for x in PHASES
        ]
        return pd.concat(rows, ignore_index=True)

    def voltage_violations(self) -> pd.DataFrame:
        """Bus phases whose voltage is outside [min_vm_pu, max_vm_pu] (rows of ``phase_voltages``)."""
        v = self.phase_voltages()
        return v[(v["vm_pu"] < v["min_vm_pu"]) | (v["vm_pu"] > v["max_vm_pu"])]

    def overloads(self, element: str) -> pd.DataFrame:
        """Lines (``"line"``) or trafos (``"trafo"``) with a phase loaded above max_loading_percent."""
        table = getattr(self, element)
        return table[table["loading_percent"] > table["max_loading_percent"]]


def network_result_3ph(grid: Grid3ph, result: Helm3phResult, scenario: int = 0) -> NetworkResult3ph:
    """Scenario ``scenario`` of a batched three-phase result, in pandapower's element indices."""
    g = grid.balanced
    bus = pd.DataFrame({"name": g.all_bus_names}, index=pd.Index(g.all_bus_ids, name="bus"))
    for k, x in enumerate(PHASES):
        bus[f"vm_{x}_pu"] = pd.Series(result.vm_pu[scenario][:, k], index=g.bus_ids)
        bus[f"va_{x}_degree"] = pd.Series(result.va_degree[scenario][:, k], index=g.bus_ids)
    bus["unbalance_percent"] = pd.Series(result.unbalance_percent[scenario], index=g.bus_ids)
    bus["min_vm_pu"] = pd.Series(g.min_vm_pu, index=g.bus_ids)
    bus["max_vm_pu"] = pd.Series(g.max_vm_pu, index=g.bus_ids)

    line = pd.DataFrame({"name": g.line_names}, index=pd.Index(g.line_ids, name="line"))
    ends = {"from": result.line_current_from_ka[scenario], "to": result.line_current_to_ka[scenario]}
    for k, x in enumerate(PHASES):
        for end, amps in ends.items():
            line[f"i_{x}_{end}_ka"] = amps[:, k]
    larger = result.line_current_ka[scenario]
    for k, x in enumerate(PHASES):
        line[f"i_{x}_ka"] = larger[:, k]
    line["i_n_from_ka"] = result.line_neutral_from_ka[scenario]
    line["i_n_to_ka"] = result.line_neutral_to_ka[scenario]
    line["i_n_ka"] = result.line_neutral_ka[scenario]
    _add_loadings(line, result.line_loading_percent[scenario], g.line_max_loading_percent)

    trafo = pd.DataFrame({"name": g.trafo_names}, index=pd.Index(g.trafo_ids, name="trafo"))
    _add_loadings(trafo, result.trafo_loading_percent[scenario], g.trafo_max_loading_percent)
    return NetworkResult3ph(
        converged=bool(result.converged[scenario]),
        message=result.reasons[scenario],
        bus=bus,
        line=line,
        trafo=trafo,
        terms=int(result.terms[scenario]),
        max_mismatch_pu=float(result.max_mismatch_pu[scenario]),
    )


def _add_loadings(table: pd.DataFrame, loading: np.ndarray, max_loading: np.ndarray) -> None:
    """Per-phase loadings (n, 3), the overall one (largest phase; NaN only if all are) and the limit."""
    for k, x in enumerate(PHASES):
        table[f"loading_{x}_percent"] = loading[:, k]
    table["loading_percent"] = np.fmax.reduce(loading, axis=1) if len(loading) else np.zeros(0)
    table["max_loading_percent"] = max_loading
