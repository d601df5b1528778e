"""Bands over a profile: warm-started steps, infeasible spells, the CSV/JSON files and plots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from ocm.examples import paper_test_feeder
from ocm.profiles import profiles_from_frame
from ocm.report import write_results
from ocm.timeseries import run_timeseries

STEPS = 30
HIGH_UL01 = range(12, 16)  # steps with UL01 beyond what the feeder can carry


pytestmark = pytest.mark.usefixtures("quiet_warnings")


def paper_profile_frame() -> pd.DataFrame:
    """30 minutes of the paper feeder: UL01 rises and spikes, UL02 varies."""
    k = np.arange(STEPS)
    ul01 = 8.0 + 30.0 * np.sin(k / STEPS * np.pi) ** 2
    ul01[list(HIGH_UL01)] = 90.0
    ul02 = 6.0 + 8.0 * np.cos(k / 10 * np.pi) ** 2
    return pd.DataFrame(
        {
            "time": pd.date_range("2021-06-01 17:00", periods=STEPS, freq="1min", tz="UTC").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "load.0.p_kw": ul01,
            "load.0.q_kvar": ul01 / 3,
            "load.1.p_kw": ul02,
            "load.1.q_kvar": ul02 / 3,
        }
    )


@pytest.fixture(scope="module")
def series():
    case = case_from_pandapower(paper_test_feeder())
    profiles = profiles_from_frame(paper_profile_frame(), case)
    problem = OcmProblem(case.grid, case.flexibilities, samples=100)
    return run_timeseries(problem, profiles, objective="sum", seed=3, network="paper")


def test_every_step_gets_a_band_and_the_high_load_spell_is_infeasible(series):
    feasible = np.array([s.feasible for s in series.steps])
    assert len(series.steps) == STEPS
    assert not feasible[list(HIGH_UL01)].any() and feasible.sum() == STEPS - len(HIGH_UL01)
    for step in series.steps:
        assert (step.p_min_kw <= step.p_max_kw).all()
        if step.feasible:
            assert step.verification.passed
            assert step.v_min_pu_at_pmax >= 0.95
        else:
            np.testing.assert_array_equal(step.p_max_kw, [0.0, 0.0])
    np.testing.assert_allclose(series.uncontrollable_kw[0], 8.0 + 14.0)


def test_the_files_record_every_step(series, tmp_path):
    paths = write_results(series, tmp_path)
    assert sorted(p.name for p in paths) == [
        "bands.csv",
        "bands.json",
        "bands.png",
        "boxplots.png",
        "voltages.png",
    ]
    for path in paths:
        assert path.stat().st_size > 1000
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(tmp_path / "bands.csv")
    assert len(table) == STEPS and table["time"].iloc[0] == "2021-06-01T17:00:00Z"
    np.testing.assert_allclose(table["load.2.p_max_kw"], [s.p_max_kw[0] for s in series.steps])
    assert list(table["feasible"]) == [s.feasible for s in series.steps]
    document = json.loads((tmp_path / "bands.json").read_text())
    assert document["feasible_steps"] == STEPS - len(HIGH_UL01)
    assert [f["name"] for f in document["flexibilities"]] == ["CS01", "CS02"]
    assert document["steps"][12]["message"].startswith("no schedule")
    assert document["steps"][0]["p_max_kw"] == series.steps[0].p_max_kw.tolist()


def test_warm_starts_give_the_bands_of_cold_starts(series):
    case = case_from_pandapower(paper_test_feeder())
    profiles = profiles_from_frame(paper_profile_frame(), case)
    problem = OcmProblem(case.grid, case.flexibilities, samples=100)
    for t in (5, 20):
        cold = problem.solve(profiles.point(t), objective="sum", seed=99)
        assert cold.p_max_kw.sum() == pytest.approx(series.steps[t].p_max_kw.sum(), rel=1e-4, abs=1e-6)
