"""OCM against pandapower on CIGRE LV and the Kerber Dorfnetz with placed flexibilities:
random in-band schedules checked with ``pandapower.runpp``, and the optimum of the ``sum``
objective against SLSQP with ``runpp`` as the load flow (``ocm.reference``)."""

from __future__ import annotations

import numpy as np
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from ocm.examples import cigre_lv_with_flexibilities, kerber_dorfnetz_with_flexibilities
from ocm.reference import check_schedules, pandapower_optimum

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("quiet_warnings")]
GAP_LIMIT = 0.005  # relative to the independent optimum


def pv_heavy(net):
    net.sgen["max_p_mw"] *= 4  # PV up to 120 kW: over-voltage and reverse flows bind P_min
    return net


FEEDERS = {
    "cigre": lambda: cigre_lv_with_flexibilities(count=10, seed=1),
    "kerber": lambda: kerber_dorfnetz_with_flexibilities(count=10, seed=1),
    "cigre_pv": lambda: pv_heavy(cigre_lv_with_flexibilities(count=12, seed=4, load_scaling=0.2)),
    "kerber_pv": lambda: pv_heavy(kerber_dorfnetz_with_flexibilities(count=12, seed=7, load_scaling=0.2)),
}


@pytest.fixture(scope="module", params=list(FEEDERS))
def solved(request):
    net = FEEDERS[request.param]()
    case = case_from_pandapower(net)
    result = OcmProblem(case.grid, case.flexibilities).solve(case.point, seed=11)
    return request.param, net, case, result


def test_random_schedules_inside_the_bands_keep_every_limit_in_pandapower(solved):
    name, net, case, result = solved
    assert len(case.flexibilities) >= 8
    assert result.feasible and result.verification.passed
    count = 10_000 if name in ("cigre", "kerber") else 2_000
    rng = np.random.default_rng(5)
    width = result.p_max_kw - result.p_min_kw
    schedules = result.p_min_kw + rng.random((count, len(width))) * width
    schedules[:2] = [result.p_max_kw, result.p_min_kw]
    check = check_schedules(net, case.flexibilities, schedules)
    assert check.schedules == count and check.not_converged == 0
    assert check.violating == 0, check
    assert check.worst_voltage_excess_pu <= 1e-6 and check.worst_overload_percent <= 1e-4


def test_the_sum_optimum_matches_an_independent_optimum(solved):
    name, net, case, result = solved
    reference_max = pandapower_optimum(net, case.flexibilities, direction=+1).sum()
    gap = (reference_max - result.p_max_kw.sum()) / abs(reference_max)
    assert gap <= GAP_LIMIT
    if name == "cigre_pv":  # P_min binds on voltage here: the min problem is checked too
        reference_min = pandapower_optimum(
            net, case.flexibilities, direction=-1, high_kw=result.p_max_kw
        ).sum()
        assert (result.p_min_kw.sum() - reference_min) / abs(reference_min) <= GAP_LIMIT
        assert result.v_max_pu_at_pmin == pytest.approx(1.05, abs=1e-5)
    if name in ("cigre", "cigre_pv"):  # P_max binds on voltage
        assert result.v_min_pu_at_pmax == pytest.approx(0.95, abs=1e-5)
