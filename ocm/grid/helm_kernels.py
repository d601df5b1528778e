"""Numba kernels of the batched HELM: every array has the scenarios as its last, contiguous axis.

Shapes: ``m`` PQ nodes, ``k`` scenarios, ``T`` series terms. Series coefficients are stored as
``(T, m, k)``, Wynn tables as ``(m, k, T)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# A Wynn difference this small relative to its operands is rounding noise: the sequence has
# converged at that element and the epsilon table is cut there.
WYNN_NOISE = 1e-14


@njit(cache=True)
def lu_solve(l_ptr, l_idx, l_val, u_ptr, u_idx, u_val, u_diag_inv, perm_r, perm_c, rhs, out):
    """Solves ``A x = rhs`` for all columns, with ``Pr A Pc = L U`` (SuperLU, unit-diagonal L).

    ``L`` and ``U`` are CSR without their diagonals; ``u_diag_inv`` holds 1/diag(U).
    """
    n, k = rhs.shape
    y = np.empty((n, k), dtype=np.complex128)
    for j in range(n):
        y[perm_r[j], :] = rhs[j, :]
    for i in range(n):
        for p in range(l_ptr[i], l_ptr[i + 1]):
            c = l_idx[p]
            v = l_val[p]
            for s in range(k):
                y[i, s] -= v * y[c, s]
    for i in range(n - 1, -1, -1):
        for p in range(u_ptr[i], u_ptr[i + 1]):
            c = u_idx[p]
            v = u_val[p]
            for s in range(k):
                y[i, s] -= v * y[c, s]
        d = u_diag_inv[i]
        for s in range(k):
            y[i, s] *= d
    for i in range(n):
        out[i, :] = y[perm_c[i], :]


@njit(cache=True)
def series_rhs(conj_s, y_shunt, v, w, n, out):
    """Right-hand side of order ``n``: ``S* W[n-1] - Y_shunt V[n-1]``."""
    m, k = conj_s.shape
    for i in range(m):
        for s in range(k):
            out[i, s] = conj_s[i, s] * w[n - 1, i, s] - y_shunt[i, s] * v[n - 1, i, s]


@njit(cache=True)
def reciprocal_term(v, w, n):
    """Coefficient ``n`` of ``W = 1/V*``: ``W[n] = -W[0] * sum_{j=1..n} V*[j] W[n-j]``."""
    _, m, k = v.shape
    for i in range(m):
        for s in range(k):
            w[n, i, s] = 0.0
    for j in range(1, n + 1):
        for i in range(m):
            for s in range(k):
                w[n, i, s] += np.conj(v[j, i, s]) * w[n - j, i, s]
    for i in range(m):
        for s in range(k):
            w[n, i, s] = -w[n, i, s] * w[0, i, s]


@njit(cache=True)
def wynn_update(table, length, partial, estimate):
    """Adds one partial sum to Wynn's epsilon table and returns the Padé value in ``estimate``.

    ``table[i, s, :length[i, s]]`` is the ascending diagonal ``eps_j`` of the latest partial
    sum; the even columns are the Padé approximants at alpha = 1. The new diagonal follows the
    rhombus rule ``eps_j(new) = eps_{j-2}(old) + 1 / (eps_{j-1}(new) - eps_{j-1}(old))``.
    """
    m, k, capacity = table.shape
    noise2 = WYNN_NOISE * WYNN_NOISE
    for i in range(m):
        for s in range(k):
            row = table[i, s]
            old_length = length[i, s]
            before_re, before_im = 0.0, 0.0  # eps_{j-2} of the old diagonal (eps_{-1} = 0)
            previous = row[0]  # eps_{j-1} of the old diagonal
            row[0] = partial[i, s]
            new_length = 1
            for j in range(1, min(old_length + 1, capacity)):
                current = row[j]
                a = row[j - 1]
                d_re = a.real - previous.real
                d_im = a.imag - previous.imag
                d2 = d_re * d_re + d_im * d_im
                size2 = a.real * a.real + a.imag * a.imag
                size2 += previous.real * previous.real + previous.imag * previous.imag
                if d2 <= noise2 * size2 or d2 == 0.0:
                    break
                inv = 1.0 / d2
                row[j] = complex(before_re + d_re * inv, before_im - d_im * inv)
                new_length = j + 1
                before_re, before_im = previous.real, previous.imag
                previous = current
            length[i, s] = new_length
            top = new_length - 1 if (new_length - 1) % 2 == 0 else new_length - 2
            estimate[i, s] = row[top]


@njit(cache=True)
def max_mismatch(y_ptr, y_idx, y_val, slack_current, y_shunt, s_inj, v, out):
    """Largest ``|V (Y V)* - S|`` over the PQ nodes, per scenario (``out`` has length k).

    ``Y`` is the series matrix restricted to PQ nodes (CSR), ``slack_current`` the current the
    slack voltages drive into each PQ node, ``y_shunt`` the per-scenario shunt admittances.
    """
    m, k = v.shape
    current = np.empty(k, dtype=np.complex128)
    for s in range(k):
        out[s] = 0.0
    for i in range(m):
        for s in range(k):
            current[s] = slack_current[i] + y_shunt[i, s] * v[i, s]
        for p in range(y_ptr[i], y_ptr[i + 1]):
            c = y_idx[p]
            val = y_val[p]
            for s in range(k):
                current[s] += val * v[c, s]
        for s in range(k):
            d = abs(v[i, s] * np.conj(current[s]) - s_inj[i, s])
            if d > out[s] or d != d:  # NaN sticks
                out[s] = d
