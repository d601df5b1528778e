"""Batched HELM load flow: Trias' canonical embedding, Padé values by Wynn's epsilon algorithm.

For the PQ nodes ``i`` and fixed slack voltages the embedded equations are::

    sum_k Ys_ik V_k(a) = a S_i* / V_i*(a*) - a Ysh_i V_i(a)

with ``Ys`` the series admittance matrix, ``Ysh`` the shunt admittances (line charging,
magnetising, shunts, constant-impedance loads) and ``S`` the constant-power injections. The germ
``V[0]`` solves the series system with the slack fixed (exact for off-nominal taps and phase
shifters); order ``n`` solves ``Ys V[n] = S* W[n-1] - Ysh V[n-1]`` with the same factorisation,
where ``W = 1/V*`` follows by convolution. After every term the Padé approximant at ``a = 1`` is
taken from Wynn's epsilon table of the partial sums, and a scenario is converged when the power
mismatch of that voltage against the full equations is at most the tolerance.

A scenario whose series stops improving gets up to a few Newton-Raphson steps from its best
Padé value (a cheap polish; accepted only if the mismatch then meets the tolerance and the
voltages moved little), otherwise it is reported as having no solution, with NaN outputs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ocm.grid import helm_kernels as kernels
from ocm.grid.model import COMPUTED, UNDEFINED, UNRATED, ZERO, Grid

SCENARIO_BLOCK_ELEMENTS = 2048  # PQ nodes x scenarios solved together (fits the L2 cache)
MIN_BLOCK_SCENARIOS = 16  # ... but enough scenarios to amortise the loops on large grids
POLISH_START_PU = 1e-3  # the best Padé value must be this good before Newton may polish it
POLISH_RADIUS_PU = 3e-2  # ... and the polished voltages must stay this close to it
POLISH_STEPS = 6


@dataclass(frozen=True)
class HelmResult:
    """Load flow results of K scenarios, in the grid's internal order.

    ``vm_pu`` and ``va_degree`` are (K, n_bus) for ``grid.bus_ids``; the loadings (K, n_line)
    and (K, n_trafo) follow ``grid.line_ids`` and ``grid.trafo_ids`` (pandapower's definitions:
    current over rated current, the larger of both ends). Scenarios that did not converge have
    NaN outputs and a non-empty ``reasons`` entry.
    """

    vm_pu: np.ndarray
    va_degree: np.ndarray
    line_loading_percent: np.ndarray
    trafo_loading_percent: np.ndarray
    converged: np.ndarray
    max_mismatch_pu: np.ndarray
    terms: np.ndarray
    newton_iterations: np.ndarray
    reasons: tuple[str, ...]

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


class HelmSolver:
    """HELM for one grid: factorises the series admittance matrix once, then ``solve`` runs
    batches of load scenarios.

    ``tolerance_pu`` bounds the largest complex power mismatch per node (per unit of
    ``grid.sn_mva``; raised to 1000 times the rounding level of the admittance matrix if that
    is larger, see ``self.tolerance_pu``); ``max_terms`` bounds the series length; a scenario
    whose mismatch has not improved for ``stall_terms`` terms stops early. ``polish`` enables
    the Newton polish.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        tolerance_pu: float = 1e-10,
        max_terms: int = 60,
        stall_terms: int = 8,
        polish: bool = True,
    ):
        self.grid = grid
        self.max_terms = max_terms
        self.stall_terms = stall_terms
        self.polish = polish
        pq, slack = grid.pq_nodes, grid.slack_nodes
        y = grid.y_series.tocsr()
        self._y_pq = y[pq][:, pq].tocsr()
        self._y_pq.sort_indices()
        self._slack_current = y[pq][:, slack] @ grid.slack_voltage
        self._y_shunt = grid.y_shunt[pq]
        self._const_z = (grid.const_z_p[pq], grid.const_z_q[pq])
        self._factors = factorise(self._y_pq) if len(pq) else None
        self._germ = self._solve_linear(-self._slack_current[:, None])[:, 0]
        row_scale = abs(self._y_pq) @ abs(self._germ) + abs(self._slack_current)
        rounding_floor = 1e3 * np.finfo(float).eps * float(row_scale.max(initial=0.0))
        self.tolerance_pu = max(tolerance_pu, rounding_floor)
        pq_position = np.full(grid.n_node, -1)
        pq_position[pq] = np.arange(len(pq))
        bus_pq = pq_position[grid.node_of_bus]
        at_pq = np.flatnonzero(bus_pq >= 0)
        self._bus_to_pq = sp.csr_matrix(
            (np.ones(len(at_pq)), (bus_pq[at_pq], at_pq)), shape=(len(pq), grid.n_bus)
        )

    def solve(self, p_kw, q_kvar) -> HelmResult:
        """Load flows for net bus loads ``p_kw``, ``q_kvar`` of shape (K, n_bus) or (n_bus,).

        Loads are in load convention (consumption positive), per bus of ``grid.bus_ids``;
        loads at slack buses do not affect the voltages.
        """
        p, q = self._check_loads(p_kw, q_kvar)
        load = self._bus_to_pq @ ((p + 1j * q).T / (1e3 * self.grid.sn_mva))
        z_p, z_q = self._const_z
        s_inj = -(load.real * (1 - z_p[:, None]) + 1j * load.imag * (1 - z_q[:, None]))
        y_shunt = self._y_shunt[:, None] + load.real * z_p[:, None] - 1j * load.imag * z_q[:, None]
        m, k = s_inj.shape
        v = np.empty((m, k), complex)
        mismatch = np.zeros(k)
        terms = np.zeros(k, dtype=np.int64)
        converged = np.ones(k, dtype=bool)
        block = max(MIN_BLOCK_SCENARIOS, SCENARIO_BLOCK_ELEMENTS // max(m, 1))
        for start in range(0, k if m else 0, block):
            part = slice(start, min(start + block, k))
            with np.errstate(all="ignore"):  # diverging series of collapsed scenarios may overflow
                v[:, part], mismatch[part], terms[part], converged[part] = self._series(
                    s_inj[:, part], y_shunt[:, part]
                )
        newton = np.zeros(k, dtype=np.int64)
        for s in np.flatnonzero(~converged & (mismatch <= POLISH_START_PU) & self.polish):
            v[:, s], mismatch[s], newton[s], converged[s] = self._polish(
                v[:, s], s_inj[:, s], y_shunt[:, s], mismatch[s]
            )
        return self._result(v, converged, mismatch, terms, newton)

    def _check_loads(self, p_kw, q_kvar) -> tuple[np.ndarray, np.ndarray]:
        p = np.atleast_2d(np.asarray(p_kw, dtype=float))
        q = np.atleast_2d(np.asarray(q_kvar, dtype=float))
        if p.shape != q.shape or p.ndim != 2 or p.shape[1] != self.grid.n_bus:
            raise ValueError(
                f"p_kw and q_kvar must both have shape (K, {self.grid.n_bus}) or "
                f"({self.grid.n_bus},); got {np.shape(p_kw)} and {np.shape(q_kvar)}"
            )
        if not (np.isfinite(p).all() and np.isfinite(q).all()):
            raise ValueError("p_kw and q_kvar must be finite")
        return p, q

    def _solve_linear(self, rhs: np.ndarray) -> np.ndarray:
        out = np.empty_like(rhs, dtype=complex)
        if self._factors is not None:
            kernels.lu_solve(*self._factors, np.ascontiguousarray(rhs, dtype=complex), out)
        return out

    def _series(self, s_inj: np.ndarray, y_shunt: np.ndarray):
        """HELM terms for one block of scenarios until each converges or stalls.

        Returns the voltages of the PQ nodes (the best Padé value for unconverged scenarios),
        their mismatch, the number of terms used and whether they converged.
        """
        m, k = s_inj.shape
        run = _SeriesState(self._germ, s_inj, y_shunt, capacity=16)
        v_out = np.empty((m, k), complex)
        mismatch_out = np.full(k, np.inf)
        terms_out = np.zeros(k, dtype=np.int64)
        converged_out = np.zeros(k, dtype=bool)
        best_v = run.estimate.copy()
        best_mismatch = np.full(k, np.inf)
        best_term = np.zeros(k, dtype=np.int64)
        running = np.ones(k, dtype=bool)
        mismatch = np.empty(k)
        for n in range(1, self.max_terms + 1):
            run.ensure_capacity(n)
            kernels.series_rhs(run.conj_s, run.y_shunt, run.v, run.w, n, run.rhs)
            kernels.lu_solve(*self._factors, run.rhs, run.v[n])
            kernels.reciprocal_term(run.v, run.w, n)
            run.partial += run.v[n]
            kernels.wynn_update(run.table, run.length, run.partial, run.estimate)
            kernels.max_mismatch(
                self._y_pq.indptr,
                self._y_pq.indices,
                self._y_pq.data,
                self._slack_current,
                run.y_shunt,
                run.s_inj,
                run.estimate,
                mismatch,
            )
            improved = mismatch < best_mismatch
            np.copyto(best_v, run.estimate, where=improved)
            best_mismatch[improved] = mismatch[improved]
            best_term[improved] = n
            converged = mismatch <= self.tolerance_pu
            done = running & (converged | (n - best_term >= self.stall_terms) | (n == self.max_terms))
            if not done.any():
                continue
            finished = run.scenarios[done]
            v_out[:, finished] = best_v[:, done]
            mismatch_out[finished] = best_mismatch[done]
            terms_out[finished] = n
            converged_out[finished] = converged[done]
            running &= ~done
            if not running.any():
                break
            if running.sum() <= len(running) // 2:  # compact only when it pays
                run.keep(running)
                best_v, best_mismatch = best_v[:, running], best_mismatch[running]
                best_term, running = best_term[running], running[running]
                mismatch = np.empty(len(running))
        return v_out, mismatch_out, terms_out, converged_out

    def _polish(self, v_start, s_inj, y_shunt, mismatch):
        """Newton-Raphson steps from a Padé value; returns (v, mismatch, steps, converged)."""
        y = (self._y_pq + sp.diags(y_shunt)).tocsc()
        v = v_start.copy()
        for step in range(1, POLISH_STEPS + 1):
            current = y @ v + self._slack_current
            residual = v * current.conj() - s_inj
            dx = newton_step(_polar_jacobian(y, v, current), residual)
            if dx is None:
                break
            m = len(v)
            v = (np.abs(v) + dx[m:]) * np.exp(1j * (np.angle(v) + dx[:m]))
            mismatch_new = np.abs(v * (y @ v + self._slack_current).conj() - s_inj).max()
            if not np.isfinite(mismatch_new) or np.abs(v - v_start).max() > POLISH_RADIUS_PU:
                break
            if mismatch_new <= self.tolerance_pu:
                return v, mismatch_new, step, True
        return v_start, mismatch, 0, False

    def _result(self, v_pq, converged, mismatch, terms, newton) -> HelmResult:
        grid = self.grid
        k = v_pq.shape[1]
        v_nodes = np.empty((grid.n_node, k), complex)
        v_nodes[grid.pq_nodes] = v_pq
        v_nodes[grid.slack_nodes] = grid.slack_voltage[:, None]
        v_nodes[:, ~converged] = np.nan
        v_bus = v_nodes[grid.node_of_bus].T
        loading = _branch_loading(grid, v_nodes)
        reasons = tuple(
            ""
            if ok
            else (
                f"no solution: the HELM series did not converge (best power mismatch {mis:.2e} "
                f"pu after {n} terms); the load is beyond the voltage-collapse point or too "
                "close to it"
            )
            for ok, mis, n in zip(converged, mismatch, terms, strict=True)
        )
        return HelmResult(
            vm_pu=np.abs(v_bus),
            va_degree=np.angle(v_bus, deg=True),
            line_loading_percent=loading[:, : grid.n_line],
            trafo_loading_percent=loading[:, grid.n_line :],
            converged=converged,
            max_mismatch_pu=mismatch,
            terms=terms,
            newton_iterations=newton,
            reasons=reasons,
        )


class _SeriesState:
    """Series coefficients, Wynn table and Padé values of the scenarios still running."""

    def __init__(self, germ: np.ndarray, s_inj: np.ndarray, y_shunt: np.ndarray, capacity: int):
        m, k = s_inj.shape
        self.scenarios = np.arange(k)
        self.s_inj = np.ascontiguousarray(s_inj)
        self.conj_s = self.s_inj.conj()
        self.y_shunt = np.ascontiguousarray(y_shunt)
        self.v = np.empty((capacity, m, k), complex)
        self.w = np.empty((capacity, m, k), complex)
        self.v[0] = germ[:, None]
        self.w[0] = 1 / germ.conj()[:, None]
        self.rhs = np.empty((m, k), complex)
        self.partial = self.v[0].copy()
        self.table = np.empty((m, k, capacity), complex)
        self.length = np.zeros((m, k), dtype=np.int64)
        self.estimate = np.empty((m, k), complex)
        kernels.wynn_update(self.table, self.length, self.partial, self.estimate)

    def ensure_capacity(self, n: int) -> None:
        """Room for term ``n`` (the Wynn table needs one entry per term)."""
        capacity = self.v.shape[0]
        if n < capacity:
            return
        grow = capacity
        self.v = np.concatenate([self.v, np.empty((grow, *self.v.shape[1:]), complex)])
        self.w = np.concatenate([self.w, np.empty((grow, *self.w.shape[1:]), complex)])
        self.table = np.concatenate([self.table, np.empty((*self.table.shape[:2], grow), complex)], axis=2)

    def keep(self, mask: np.ndarray) -> None:
        """Drops the finished scenarios (columns where ``mask`` is False)."""
        self.scenarios = self.scenarios[mask]
        for name in ("s_inj", "conj_s", "y_shunt", "partial", "estimate", "length"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[:, mask]))
        self.v = np.ascontiguousarray(self.v[:, :, mask])
        self.w = np.ascontiguousarray(self.w[:, :, mask])
        self.table = np.ascontiguousarray(self.table[:, mask, :])
        self.rhs = np.empty_like(self.s_inj)


def factorise(a: sp.csr_matrix) -> tuple:
    """Sparse LU of the PQ series matrix in the arrays ``kernels.lu_solve`` expects."""
    lu = spla.splu(a.tocsc(), permc_spec="COLAMD")
    lower = sp.tril(lu.L.tocsr(), k=-1, format="csr")
    upper = lu.U.tocsr()
    diagonal = upper.diagonal()
    upper = sp.triu(upper, k=1, format="csr")
    for matrix in (lower, upper):
        matrix.sort_indices()
    return (
        lower.indptr,
        lower.indices,
        lower.data.astype(complex),
        upper.indptr,
        upper.indices,
        upper.data.astype(complex),
        1 / diagonal.astype(complex),
        lu.perm_r.astype(np.int64),
        lu.perm_c.astype(np.int64),
    )


def newton_step(jacobian: sp.csc_matrix, residual: np.ndarray) -> np.ndarray | None:
    """The real Newton step for a complex ``residual`` ([real; imaginary] parts), or None if
    the Jacobian is singular (at or beyond the nose of the voltage curve)."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", spla.MatrixRankWarning)
            return spla.spsolve(jacobian, -np.concatenate([residual.real, residual.imag]))
    except RuntimeError:
        return None


def _polar_jacobian(y: sp.csc_matrix, v: np.ndarray, current: np.ndarray) -> sp.csc_matrix:
    """Jacobian of the complex power injections by voltage angle and magnitude."""
    diag_v = sp.diags(v)
    diag_norm = sp.diags(v / np.abs(v))
    ds_dva = 1j * diag_v @ (sp.diags(current) - y @ diag_v).conj()
    ds_dvm = diag_v @ (y @ diag_norm).conj() + sp.diags(current.conj()) @ diag_norm
    return sp.bmat([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]], format="csc")


def _branch_loading(grid: Grid, v_nodes: np.ndarray) -> np.ndarray:
    """(K, n_line + n_trafo) loading percent from node voltages (n_node, K)."""
    state = grid.branch_state
    k = v_nodes.shape[1]
    loading = np.zeros((k, len(state)))
    computed = np.flatnonzero(state == COMPUTED)
    v_from = v_nodes[grid.branch_from[computed]]
    v_to = v_nodes[grid.branch_to[computed]]
    y = grid.branch_admittance[computed]
    i_from = np.abs(y[:, 0, None] * v_from + y[:, 1, None] * v_to)
    i_to = np.abs(y[:, 2, None] * v_from + y[:, 3, None] * v_to)
    factor = grid.branch_factor[computed]
    loading[:, computed] = np.maximum(i_from * factor[:, 0, None], i_to * factor[:, 1, None]).T
    loading[:, state == ZERO] = 0.0
    loading[:, state == UNDEFINED] = np.nan
    loading[:, state == UNRATED] = np.inf
    failed = np.isnan(v_nodes).any(axis=0)
    loading[failed] = np.nan
    return loading
