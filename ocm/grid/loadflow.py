"""Load flow of a network as given (its base case), with results indexed like pandapower's
``res_bus``, ``res_line`` and ``res_trafo`` tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ocm.grid.helm import HelmResult, HelmSolver
from ocm.grid.model import Grid


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
