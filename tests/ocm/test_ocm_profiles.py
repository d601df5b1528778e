"""The profiles CSV format, its errors, and profiles from a SimBench network."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from ocm.case import case_from_pandapower
from ocm.examples import place_flexibilities
from ocm.profiles import ProfileError, profiles_from_frame, read_profiles, simbench_profiles, write_profiles
from tests.ocm.test_ocm_flexibility import flexible_feeder

pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.fixture(scope="module")
def case():
    return case_from_pandapower(flexible_feeder())


def write(tmp_path, text: str):
    path = tmp_path / "profiles.csv"
    path.write_text(text)
    return path


def test_columns_replace_the_networks_values_with_scaling_and_keep_the_rest(tmp_path, case):
    path = write(
        tmp_path,
        "time,load.1.p_kw,sgen.1.p_kw,load.1.q_kvar,sgen.0.max_p_kw,load.3.q_kvar\n"
        "2016-06-01T12:00:00Z,6.0,4.0,1.0,7.5,0.5\n"
        "2016-06-01T12:01:00+00:00,4.0,2.0,1.5,3.0,0.0\n",
    )
    profiles = read_profiles(path, case)
    assert len(profiles) == 2
    np.testing.assert_allclose(profiles.times, [1464782400.0, 1464782460.0])
    bus = {b: k for k, b in enumerate(case.grid.bus_ids)}
    # load 1 (5 kW in the net) at bus 3 with the fixed PV (sgen 1, scaling 0.5)
    np.testing.assert_allclose(profiles.p_kw[:, bus[3]], [6.0 - 2.0, 4.0 - 1.0])
    np.testing.assert_allclose(profiles.p_kw[:, bus[2]], case.point.p_kw[bus[2]])  # untouched
    assert profiles.q_kvar[0, bus[2]] == pytest.approx(case.point.q_kvar[bus[2]] + 0.5)  # charger's Q
    # the PV flexibility's available power becomes its lower limit (load convention)
    np.testing.assert_allclose(profiles.p_low_kw[:, 1], [-7.5, -3.0])
    np.testing.assert_allclose(profiles.p_high_kw[:, 1], [0.0, 0.0])
    np.testing.assert_allclose(profiles.p_high_kw[:, 0], 11.0)


def test_unix_seconds_are_accepted_and_head_keeps_the_first_steps(tmp_path, case):
    profiles = read_profiles(write(tmp_path, "time,load.0.p_kw\n0,1\n60,2\n120,3\n"), case)
    np.testing.assert_allclose(profiles.times, [0, 60, 120])
    assert len(profiles.head(2)) == 2 and profiles.head(2).p_kw.shape == (2, case.grid.n_bus)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stamp,load.0.p_kw\n0,1\n", "first column must be 'time'"),
        ("time,load.0.pkw\n0,1\n", "column 'load.0.pkw': expected <element>.<index>.<field>"),
        ("time,load.9.p_kw\n0,1\n", "column load.9.p_kw: the network has no load 9"),
        ("time,load.3.p_kw\n0,1\n", "column load.3.p_kw: load 3 is a flexibility"),
        ("time,load.0.max_p_kw\n0,1\n", "load 0 is not a flexibility; allowed fields: p_kw, q_kvar"),
        ("time,load.0.p_kw\n0,1\n60,x\n", "column load.0.p_kw, line 3: 'x' is not a finite number"),
        ("time,load.0.p_kw\n0,1\n60,\n", "column load.0.p_kw, line 3: '' is not a finite number"),
        ("time,load.0.p_kw\n60,1\n0,1\n", "column time, line 3: times must increase"),
        ("time,load.0.p_kw\nnoon,1\n", "column time, line 2: 'noon' is neither"),
        ("time,sgen.0.min_p_kw,sgen.0.max_p_kw\n0,5,4\n", "line 2: sgen.0 .pv. has min_p_kw above max_p_kw"),
        ("time,load.0.p_kw\n", "no time steps"),
    ],
)
def test_bad_profiles_are_refused_naming_column_and_line(tmp_path, case, text, message):
    with pytest.raises(ProfileError, match=message):
        read_profiles(write(tmp_path, text), case)


def test_missing_profiles_file(tmp_path, case):
    with pytest.raises(ProfileError, match="no such file"):
        read_profiles(tmp_path / "absent.csv", case)


def test_simbench_profiles_for_one_day_at_one_minute(tmp_path):
    import simbench

    net = simbench.get_simbench_net("1-LV-rural1--0-sw")
    net.sgen["controllable"] = False
    quarter = simbench.get_absolute_values(net, True)[("load", "p_mw")]
    keys = place_flexibilities(net, 4, seed=3)
    pv = next(k for k in keys if k.startswith("sgen"))
    net.sgen.loc[int(pv.split(".")[1]), "profile"] = "PV5"  # a flexible PV with a profile
    case = case_from_pandapower(net)
    frame = simbench_profiles(net, "2016-06-01", case)
    assert len(frame) == 1440 and frame["time"].iloc[0] == pd.Timestamp("2016-06-01", tz="UTC")
    assert f"{pv}.max_p_kw" in frame and f"{pv}.p_kw" not in frame
    assert "load.0.p_kw" in frame and "load.0.q_kvar" in frame
    stamps = pd.to_datetime(net.profiles["load"]["time"], format="%d.%m.%Y %H:%M", utc=True)
    row = np.flatnonzero(stamps == pd.Timestamp("2016-06-01 12:15", tz="UTC"))[0]
    at_1215 = frame.loc[frame["time"] == pd.Timestamp("2016-06-01 12:15", tz="UTC"), "load.0.p_kw"]
    assert at_1215.iloc[0] == pytest.approx(quarter[0].iloc[row] * 1e3)
    path = tmp_path / "day.csv"
    write_profiles(frame, path)
    profiles = read_profiles(path, case)
    assert len(profiles) == 1440 and np.isfinite(profiles.p_kw).all()
    assert (profiles.p_low_kw <= profiles.p_high_kw).all()
    with pytest.raises(ProfileError, match="not covered"):
        simbench_profiles(net, "2019-01-01", case)
    plain = pp.create_empty_network()
    plain.update(profiles=None)
    with pytest.raises(ProfileError, match="needs a SimBench network"):
        simbench_profiles(plain, "2016-06-01", case)


def test_profiles_from_a_frame_of_numbers(case):
    frame = pd.DataFrame({"time": [0.0, 60.0], "load.0.p_kw": [2.0, 3.0]})
    profiles = profiles_from_frame(frame, case)
    assert profiles.point(1).p_kw[case.grid.bus_positions([2])[0]] == pytest.approx(3.0)
