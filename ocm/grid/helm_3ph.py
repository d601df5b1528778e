"""Batched three-phase HELM load flow in symmetrical components.

The sequence networks (``ocm.grid.three_phase``) are linear and decoupled; the constant-power
loads couple them per phase. With ``W_p = 1/V_p*`` for each phase voltage (and each
phase-to-phase voltage of delta loads) the embedded equations are::

    Y0 V0(s) = I0(s),   Y1 V1(s) = I1(s) (PQ nodes, slack fixed),   Y2 V2(s) = I2(s)
    I_012(s) = T012 I_abc(s),   I_p(s) = s S_p* W_p(s)

The germ is the no-load state (V1 from the slack, V0 = V2 = 0); order ``n`` takes the load
currents from ``W[n-1]`` and solves the three sequence systems with their LU factors (built
once). Padé values come from Wynn's epsilon table of the sequence voltages, and a scenario is
converged when its largest per-phase power mismatch is at most the tolerance; a scenario whose
series stops improving has no solution (it is at or beyond voltage collapse) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ocm.grid import helm_kernels as kernels
from ocm.grid.helm import factorise, newton_step
from ocm.grid.model import COMPUTED, UNDEFINED, UNRATED, ZERO
from ocm.grid.three_phase import PHASE_FROM_SEQUENCE, SEQUENCE_FROM_PHASE, Grid3ph

SCENARIO_BLOCK_ELEMENTS = 2048  # nodes x 3 x scenarios solved together
MIN_BLOCK_SCENARIOS = 8
POLISH_START_PU = 1e-3  # the best Padé value must be this good before Newton may polish it
POLISH_RADIUS_PU = 3e-2  # ... and the polished voltages must stay this close to it
POLISH_STEPS = 8


@dataclass(frozen=True)
class Helm3phResult:
    """Three-phase load flow results of K scenarios (pandapower's ``res_*_3ph`` quantities).

    Buses follow ``grid.balanced.bus_ids``: ``vm_pu``/``va_degree`` (K, n_bus, 3) for phases
    a, b, c and ``unbalance_percent`` (K, n_bus) = |V2|/|V1|. Lines follow ``line_ids``: phase
    currents at each end and the larger of both (K, n_line, 3) in kA, the neutral (earth
    return) current at each end and the larger of both (K, n_line), loadings per phase (K, n_line, 3) against
    ``max_i_ka``. Transformers follow ``trafo_ids``: loadings per phase (K, n_trafo, 3).
    Scenarios without a solution have NaN outputs and a reason.
    """

    vm_pu: np.ndarray
    va_degree: np.ndarray
    unbalance_percent: np.ndarray
    line_current_from_ka: np.ndarray
    line_current_to_ka: np.ndarray
    line_neutral_from_ka: np.ndarray
    line_neutral_to_ka: np.ndarray
    line_loading_percent: np.ndarray
    trafo_loading_percent: np.ndarray
    converged: np.ndarray
    max_mismatch_pu: np.ndarray
    terms: np.ndarray
    reasons: tuple[str, ...]

    @property
    def line_current_ka(self) -> np.ndarray:
        """Phase currents (K, n_line, 3), the larger of both ends."""
        return np.maximum(self.line_current_from_ka, self.line_current_to_ka)

    @property
    def line_neutral_ka(self) -> np.ndarray:
        """Neutral (earth return) current (K, n_line), the larger of both ends."""
        return np.maximum(self.line_neutral_from_ka, self.line_neutral_to_ka)

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


class Helm3phSolver:
    """Three-phase HELM for one grid: factorises the sequence matrices once, then ``solve``
    runs batches of per-phase load scenarios.

    ``tolerance_pu`` bounds the largest per-phase complex power mismatch (per unit of
    ``sn_mva / 3``, raised to 1000 times the rounding level of the matrices if larger).
    """

    def __init__(
        self, grid: Grid3ph, *, tolerance_pu: float = 1e-10, max_terms: int = 60, stall_terms: int = 8
    ):
        self.grid = grid
        self.max_terms = max_terms
        self.stall_terms = stall_terms
        g = grid.balanced
        n = g.n_node
        pq, slack = g.pq_nodes, g.slack_nodes
        self._pq = pq
        self._y = (grid.y0, grid.y1, grid.y2)
        y1 = grid.y1.tocsr()
        y1_pq = y1[pq][:, pq].tocsr()
        self._factors = (factorise(grid.y0), factorise(y1_pq) if len(pq) else None, factorise(grid.y2))
        germ = np.zeros((3, n), complex)
        germ[1, slack] = g.slack_voltage
        if len(pq):
            rhs = -(y1[pq][:, slack] @ g.slack_voltage)
            germ[1, pq] = _lu(self._factors[1], rhs[:, None])[:, 0]
        self._germ = germ
        self._slack = slack
        row_scale = abs(y1) @ abs(germ[1])
        self.tolerance_pu = max(tolerance_pu, 1e3 * np.finfo(float).eps * float(row_scale.max(initial=0.0)))
        self._bus_to_node = sp.csr_matrix(
            (np.ones(g.n_bus), (g.node_of_bus, np.arange(g.n_bus))), shape=(n, g.n_bus)
        )

    def solve(self, p_kw, q_kvar, p_delta_kw=None, q_delta_kvar=None) -> Helm3phResult:
        """Load flows for per-phase bus loads of shape (K, n_bus, 3) or (n_bus, 3).

        ``p_kw``/``q_kvar`` are wye loads on phases a, b, c; ``p_delta_kw``/``q_delta_kvar``
        are loads between phases ab, bc, ca (default: the grid's own delta loads). Load
        convention: consumption positive, in kW/kvar per phase.
        """
        g = self.grid
        p, q = _check(p_kw, q_kvar, g.n_bus, "p_kw", "q_kvar")
        if p_delta_kw is None and q_delta_kvar is None:
            p_delta, q_delta = (
                np.broadcast_to(g.base_delta_kw, p.shape),
                np.broadcast_to(g.base_delta_kvar, p.shape),
            )
        else:
            p_delta, q_delta = _check(
                np.zeros_like(p) if p_delta_kw is None else p_delta_kw,
                np.zeros_like(q) if q_delta_kvar is None else q_delta_kvar,
                g.n_bus,
                "p_delta_kw",
                "q_delta_kvar",
            )
            p_delta, q_delta = np.broadcast_to(p_delta, p.shape), np.broadcast_to(q_delta, p.shape)
        to_pu = 3 / (1e3 * g.balanced.sn_mva)  # per-phase kW in pu of sn_mva / 3
        s_wye = -self._per_node(p + 1j * q) * to_pu
        s_delta = -self._per_node(p_delta + 1j * q_delta) * to_pu
        k = s_wye.shape[2]
        n = g.balanced.n_node
        v012 = np.empty((3, n, k), complex)
        mismatch = np.empty(k)
        terms = np.zeros(k, dtype=np.int64)
        converged = np.zeros(k, dtype=bool)
        block = max(MIN_BLOCK_SCENARIOS, SCENARIO_BLOCK_ELEMENTS // max(3 * n, 1))
        for start in range(0, k, block):
            part = slice(start, min(start + block, k))
            with np.errstate(all="ignore"):  # diverging series of collapsed scenarios may overflow
                v012[:, :, part], mismatch[part], terms[part], converged[part] = self._series(
                    s_wye[:, :, part], s_delta[:, :, part]
                )
        newton = np.zeros(k, dtype=np.int64)
        for j in np.flatnonzero(~converged & (mismatch <= POLISH_START_PU)):
            v012[:, :, j], mismatch[j], newton[j], converged[j] = self._polish(
                v012[:, :, j], s_wye[:, :, j], s_delta[:, :, j], mismatch[j]
            )
        return self._result(v012, converged, mismatch, terms + newton)

    def _polish(self, v_start: np.ndarray, s_wye: np.ndarray, s_delta: np.ndarray, mismatch: float):
        """Newton-Raphson steps (rectangular, in sequence components) from a Padé value.

        Returns (v012, mismatch, steps, converged); the start is kept when Newton does not
        reach the tolerance within a few steps close to it.
        """
        n = v_start.shape[1]
        unknown = np.ones((3, n), bool)
        unknown[1, self._slack] = False
        unknown = unknown.ravel()
        y = sp.block_diag(self._y, format="csr")
        to_phase = sp.kron(sp.csr_matrix(PHASE_FROM_SEQUENCE), sp.eye(n), format="csr")
        to_sequence = sp.kron(sp.csr_matrix(SEQUENCE_FROM_PHASE), sp.eye(n), format="csr")
        between = sp.kron(sp.csr_matrix([[1, -1, 0], [0, 1, -1], [-1, 0, 1]]), sp.eye(n), format="csr")
        delta_to_phase = between.T.tocsr()
        s_w, s_d = s_wye.ravel(), s_delta.ravel()
        v = v_start.ravel().copy()
        for step in range(1, POLISH_STEPS + 1):
            v_abc = to_phase @ v
            v_d = between @ v_abc
            with np.errstate(divide="ignore", invalid="ignore"):
                d_wye = np.where(s_w != 0, s_w.conj() / v_abc.conj() ** 2, 0)
                d_delta = np.where(s_d != 0, s_d.conj() / v_d.conj() ** 2, 0)
            load_current = np.conj(np.where(s_w != 0, s_w / v_abc, 0)) + delta_to_phase @ np.conj(
                np.where(s_d != 0, s_d / v_d, 0)
            )
            residual = (y @ v - to_sequence @ load_current)[unknown]
            conj_part = (
                to_sequence
                @ (sp.diags(d_wye) + delta_to_phase @ sp.diags(d_delta) @ between)
                @ to_phase.conj()
            )
            a = y[unknown][:, unknown]
            b = conj_part.tocsr()[unknown][:, unknown]
            jacobian = sp.bmat([[(a + b).real, -(a - b).imag], [(a + b).imag, (a - b).real]], format="csc")
            dx = newton_step(jacobian, residual)
            if dx is None:
                break
            m = int(unknown.sum())
            v[unknown] += dx[:m] + 1j * dx[m:]
            v012 = v.reshape(3, n)
            if not np.isfinite(v).all() or np.abs(_phases(v012) - _phases(v_start)).max() > POLISH_RADIUS_PU:
                break
            new_mismatch = self._mismatch(v012[:, :, None], s_wye[:, :, None], s_delta[:, :, None])[0]
            if new_mismatch <= self.tolerance_pu:
                return v012, new_mismatch, step, True
        return v_start, mismatch, 0, False

    def _per_node(self, per_bus: np.ndarray) -> np.ndarray:
        """(K, n_bus, 3) per bus -> (3, n_node, K) per node (buses of a node add up)."""
        k = per_bus.shape[0]
        flat = per_bus.transpose(1, 2, 0).reshape(self.grid.n_bus, 3 * k)
        return (self._bus_to_node @ flat).reshape(-1, 3, k).transpose(1, 0, 2)

    def _series(self, s_wye: np.ndarray, s_delta: np.ndarray):
        """HELM terms for one block of scenarios until each converges or stalls."""
        _, n, k = s_wye.shape
        has_delta = bool(np.any(s_delta != 0))
        capacity = self.max_terms + 1
        v = np.empty((capacity, 3 * n, k), complex)  # phase voltages a, b, c stacked by node
        w = np.empty_like(v)
        v[0] = _phases(np.broadcast_to(self._germ[:, :, None], (3, n, k))).reshape(3 * n, k)
        w[0] = 1 / v[0].conj()
        if has_delta:
            vd = np.empty_like(v)
            wd = np.empty_like(v)
            vd[0] = _between(v[0], n)
            wd[0] = 1 / vd[0].conj()
        partial = np.repeat(self._germ.reshape(3 * n, 1), k, axis=1)
        table = np.empty((3 * n, k, capacity), complex)
        length = np.zeros((3 * n, k), dtype=np.int64)
        estimate = np.empty((3 * n, k), complex)
        kernels.wynn_update(table, length, partial, estimate)
        conj_wye = s_wye.reshape(3 * n, k).conj()
        conj_delta = s_delta.reshape(3 * n, k).conj()
        best = estimate.copy()
        best_mismatch = np.full(k, np.inf)
        best_term = np.zeros(k, dtype=np.int64)
        done = np.zeros(k, dtype=bool)
        terms = np.zeros(k, dtype=np.int64)
        converged = np.zeros(k, dtype=bool)
        for order in range(1, self.max_terms + 1):
            current = conj_wye * w[order - 1]
            if has_delta:
                current += _delta_to_phase(conj_delta * wd[order - 1], n)
            i012 = _sequences(current.reshape(3, n, k))
            term = np.zeros((3, n, k), complex)
            term[0] = _lu(self._factors[0], i012[0])
            term[2] = _lu(self._factors[2], i012[2])
            if len(self._pq):
                term[1, self._pq] = _lu(self._factors[1], i012[1, self._pq])
            v[order] = _phases(term).reshape(3 * n, k)
            kernels.reciprocal_term(v[: order + 1], w[: order + 1], order)
            if has_delta:
                vd[order] = _between(v[order], n)
                kernels.reciprocal_term(vd[: order + 1], wd[: order + 1], order)
            partial += term.reshape(3 * n, k)
            kernels.wynn_update(table, length, partial, estimate)
            mismatch = self._mismatch(estimate.reshape(3, n, k), s_wye, s_delta)
            improved = (mismatch < best_mismatch) & ~done
            np.copyto(best, estimate, where=improved[None, :])
            best_mismatch[improved] = mismatch[improved]
            best_term[improved] = order
            ok = mismatch <= self.tolerance_pu
            finishing = ~done & (ok | (order - best_term >= self.stall_terms) | (order == self.max_terms))
            terms[finishing] = order
            converged[finishing] = ok[finishing]
            done |= finishing
            if done.all():
                break
        return best.reshape(3, n, k), best_mismatch, terms, converged

    def _mismatch(self, v012: np.ndarray, s_wye: np.ndarray, s_delta: np.ndarray) -> np.ndarray:
        """Largest per-phase power mismatch ``|V_p (I_network,p - I_load,p)*|`` per scenario."""
        n, k = v012.shape[1:]
        v_abc = _phases(v012)
        load = np.conj(s_wye / v_abc)
        if np.any(s_delta != 0):
            v_between = _between(v_abc.reshape(3 * n, k), n).reshape(3, n, k)
            load += _delta_to_phase(np.conj(s_delta / v_between).reshape(3 * n, k), n).reshape(3, n, k)
        residual = np.stack([self._y[s] @ v012[s] for s in range(3)]) - _sequences(load)
        residual[1, self._slack] = 0.0
        power = np.abs(v_abc * _phases(residual).conj())
        return np.max(power.reshape(3 * n, k), axis=0, initial=0.0)

    def _result(self, v012: np.ndarray, converged, mismatch, terms) -> Helm3phResult:
        g = self.grid.balanced
        v012 = v012.copy()
        v012[:, :, ~converged] = np.nan
        v_abc = _phases(v012)
        bus = g.node_of_bus
        v_bus = v_abc[:, bus].transpose(2, 1, 0)  # (K, n_bus, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            unbalance = (np.abs(v012[2, bus]) / np.abs(v012[1, bus])).T * 100
        i_from, i_to = self._branch_currents(v012)
        n_line = g.n_line
        base_ka = np.full((len(g.branch_state), 2), np.nan)
        connected = np.flatnonzero(g.branch_state == COMPUTED)
        for end, nodes in enumerate((g.branch_from, g.branch_to)):
            base_ka[connected, end] = g.sn_mva / (np.sqrt(3) * g.node_base_kv[nodes[connected]])
        amps_from = np.abs(_phases(i_from)) * base_ka[None, :, 0, None]  # (3, n_branch, K)
        amps_to = np.abs(_phases(i_to)) * base_ka[None, :, 1, None]
        loading = np.fmax(
            np.abs(_phases(i_from)) * g.branch_factor[None, :, 0, None],
            np.abs(_phases(i_to)) * g.branch_factor[None, :, 1, None],
        ).transpose(2, 1, 0)  # (K, n_branch, 3)
        state = g.branch_state
        loading[:, state == ZERO] = 0.0
        loading[:, state == UNDEFINED] = np.nan
        loading[:, state == UNRATED] = np.inf
        loading[~converged] = np.nan
        amps_from, amps_to = amps_from.transpose(2, 1, 0), amps_to.transpose(2, 1, 0)
        neutral = []  # |I_a + I_b + I_c| = 3 |I0| at each end
        for end, (amps, i_seq) in enumerate(((amps_from, i_from), (amps_to, i_to))):
            ends = 3 * np.abs(i_seq[0]).T * base_ka[None, :, end]
            # out of service: no current; at a de-energised end it is undefined (pandapower)
            at_rest = (state == ZERO) | ((state == UNDEFINED) & self.grid.branch_end_energised[:, end])
            for values in (amps, ends):
                values[:, at_rest] = 0.0
            neutral.append(ends)
        reasons = tuple(
            ""
            if ok
            else (
                f"no solution: the three-phase HELM series did not converge (best power mismatch {mis:.2e} "
                f"pu after {n} terms); the load is beyond the voltage-collapse point or too close to it"
            )
            for ok, mis, n in zip(converged, mismatch, terms, strict=True)
        )
        return Helm3phResult(
            vm_pu=np.abs(v_bus),
            va_degree=np.angle(v_bus, deg=True),
            unbalance_percent=unbalance,
            line_current_from_ka=amps_from[:, :n_line],
            line_current_to_ka=amps_to[:, :n_line],
            line_neutral_from_ka=neutral[0][:, :n_line],
            line_neutral_to_ka=neutral[1][:, :n_line],
            line_loading_percent=loading[:, :n_line],
            trafo_loading_percent=loading[:, n_line:],
            converged=converged,
            max_mismatch_pu=mismatch,
            terms=terms,
            reasons=reasons,
        )

    def _branch_currents(self, v012: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sequence currents (3, n_branch, K) into each branch at its from and to end (pu)."""
        g = self.grid.balanced
        k = v012.shape[2]
        n_branch = len(g.branch_state)
        i_from = np.zeros((3, n_branch, k), complex)
        i_to = np.zeros((3, n_branch, k), complex)
        connected = np.flatnonzero(g.branch_state == COMPUTED)
        f, t = g.branch_from[connected], g.branch_to[connected]
        two_ports = (self.grid.branch_admittance_0, g.branch_admittance, self.grid.branch_admittance_2)
        for s, y in enumerate(two_ports):
            y = y[connected]
            i_from[s, connected] = y[:, 0, None] * v012[s, f] + y[:, 1, None] * v012[s, t]
            i_to[s, connected] = y[:, 2, None] * v012[s, f] + y[:, 3, None] * v012[s, t]
        return i_from, i_to


def _check(p, q, n_bus: int, p_name: str, q_name: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.ndim == 2:
        p = p[None]
    if q.ndim == 2:
        q = q[None]
    if p.shape != q.shape or p.ndim != 3 or p.shape[1:] != (n_bus, 3):
        raise ValueError(
            f"{p_name} and {q_name} must both have shape (K, {n_bus}, 3) or ({n_bus}, 3) "
            f"(per bus and phase); got {np.shape(p)} and {np.shape(q)}"
        )
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError(f"{p_name} and {q_name} must be finite")
    return p, q


def _phases(x012: np.ndarray) -> np.ndarray:
    """Phase (a, b, c) values from sequence (0, 1, 2) values along the first axis."""
    return _transform(PHASE_FROM_SEQUENCE, x012)


def _sequences(x_abc: np.ndarray) -> np.ndarray:
    """Sequence (0, 1, 2) values from phase (a, b, c) values along the first axis."""
    return _transform(SEQUENCE_FROM_PHASE, x_abc)


def _transform(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``matrix`` (3, 3) applied along the first axis of ``x`` (faster than tensordot here)."""
    out = np.empty(x.shape, dtype=complex)
    for row in range(3):
        np.multiply(x[0], matrix[row, 0], out=out[row])
        out[row] += matrix[row, 1] * x[1]
        out[row] += matrix[row, 2] * x[2]
    return out


def _between(v_abc: np.ndarray, n: int) -> np.ndarray:
    """Phase-to-phase voltages ab, bc, ca from stacked phase voltages (3n, K)."""
    a, b, c = v_abc[:n], v_abc[n : 2 * n], v_abc[2 * n :]
    return np.concatenate([a - b, b - c, c - a])


def _delta_to_phase(i_between: np.ndarray, n: int) -> np.ndarray:
    """Phase currents from the currents of delta loads ab, bc, ca (stacked (3n, K))."""
    ab, bc, ca = i_between[:n], i_between[n : 2 * n], i_between[2 * n :]
    return np.concatenate([ab - ca, bc - ab, ca - bc])


def _lu(factors, rhs: np.ndarray) -> np.ndarray:
    out = np.empty(rhs.shape, dtype=complex)
    kernels.lu_solve(*factors, np.ascontiguousarray(rhs, dtype=complex), out)
    return out
