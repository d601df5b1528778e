"""Inverter reactive power control in ``lec ocm`` and in the profiles path."""

from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from ocm.case import case_from_pandapower
from ocm.profiles import ProfileError, profiles_from_frame
from tests.ocm.networks import radial_feeder
from tests.ocm.test_ocm_cli import lec_ocm

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def pv_street(mode: str):
    """Four houses on a weak cable: a fixed PV (sgen 0, 30 kW) and a PV flexibility at the end
    (sgen 1, up to 60 kW); over-voltage limits the flexibility's generation."""
    net = radial_feeder([0.15] * 4, [1.0] * 4, std_type="NAYY 4x50 SE")
    pp.create_sgen(net, 3, 0.03, sn_mva=0.035, q_control=mode)
    pp.create_sgen(net, 4, 0.0, sn_mva=0.07, q_control=mode, controllable=True, min_p_mw=0.0, max_p_mw=0.06)
    return net


def test_lec_ocm_uses_the_networks_controls(capsys, tmp_path):
    p_min = {}
    for mode in ("", "qv", "cosphi_p"):
        path = tmp_path / f"street-{mode or 'none'}.json"
        pp.to_json(pv_street(mode), str(path))
        code, out, _ = lec_ocm(capsys, str(path), "--json")
        assert code == 0
        document = json.loads(out)
        (pv,) = document["flexibilities"]
        assert document["feasible"]
        p_min[mode] = pv["p_min_kw"]
    assert -60.0 < p_min[""] < -5.0  # over-voltage binds
    assert p_min["qv"] < p_min[""] - 3.0 and p_min["cosphi_p"] < p_min[""] - 1.0


def test_profiles_set_the_controlled_inverters_p_and_refuse_their_q():
    case = case_from_pandapower(pv_street("qv"))
    frame = pd.DataFrame({"time": [0, 60], "sgen.0.p_kw": [10.0, 25.0], "sgen.1.max_p_kw": [40.0, 50.0]})
    profiles = profiles_from_frame(frame, case)
    assert profiles.point(1).inverters.p_kw[0] == pytest.approx(-25.0)
    assert profiles.point(0).inverters.p_kw[0] == pytest.approx(-10.0)
    bus = case.grid.bus_positions([3])[0]
    np.testing.assert_allclose(profiles.p_kw[:, bus] - case.point.p_kw[bus], [20.0, 5.0])
    assert len(profiles.head(1)) == 1 and profiles.head(1).inverters.p_kw.shape == (1, 2)
    frame["sgen.0.q_kvar"] = [1.0, 1.0]
    with pytest.raises(ProfileError, match="sgen 0 has a reactive power control"):
        profiles_from_frame(frame, case)
