"""The TFM clearing (market.pricing): seeds/000 Table 5.2.4.1, caps, network limits in the
payback hour, infeasibility reports, and ADMM against the central LP."""

from __future__ import annotations

import numpy as np
import pytest

from market.pricing.admm import clear_admm
from market.pricing.network import NetworkLimits, PricingInputError
from market.pricing.synthetic import random_market
from market.pricing.tfm import Bid, Requirement, clear_central

# seeds/000 Table 5.2.3.2: payback allowed outside the congestion hours, 150 %, 1.5 DKK/kW
ALLOWED_PAYBACK = set(range(1, 6)) | set(range(7, 16)) | set(range(17, 25))
# Table 5.2.4.1 (bids): aggregator, price DKK/kW, load point, kW per congestion hour, payback hour, kW
TABLE_BIDS = [
    ("ag1", 0.75, "LP1", {6: 60.896}, 4, 66.478),
    ("ag1", 0.62, "LP4", {6: 49.673, 16: 20.819}, 10, 74.341),
    ("ag1", 0.70, "LP5", {6: 52.857, 16: 22.692}, 10, 79.820),
    ("ag2", 0.58, "LP1", {6: 87.408}, 4, 94.763),
    ("ag2", 0.66, "LP4", {6: 78.673, 16: 34.506}, 10, 119.152),
    ("ag2", 0.63, "LP5", {6: 89.463}, 4, 97.047),
    ("ag3", 0.53, "LP1", {6: 83.661}, 4, 90.853),
    ("ag3", 0.71, "LP4", {6: 81.833, 16: 35.373}, 10, 123.723),
    ("ag3", 0.59, "LP5", {6: 84.901}, 4, 92.302),
    ("ag4", 0.84, "LP1", {6: 67.318}, 4, 73.219),
    ("ag4", 0.78, "LP4", {6: 57.224, 16: 24.412}, 10, 85.806),
    ("ag4", 0.73, "LP5", {6: 54.810}, 4, 59.565),
]
# Table 5.2.4.1 (procurement percentages); absent bids are 0
TABLE_FRACTIONS = {
    ("ag1-LP4", 6): 1.0,
    ("ag1-LP4", 16): 1.0,
    ("ag1-LP5", 6): 0.392,
    ("ag1-LP5", 16): 1.0,
    ("ag2-LP1", 6): 0.562,
    ("ag2-LP4", 6): 1.0,
    ("ag2-LP4", 16): 1.0,
    ("ag2-LP5", 6): 1.0,
    ("ag3-LP1", 6): 1.0,
    ("ag3-LP4", 16): 0.230,
    ("ag3-LP5", 6): 1.0,
    ("ag4-LP5", 6): 1.0,
}


def table_bids() -> list[Bid]:
    return [Bid(f"{ag}-{lp}", ag, p, lp, kw, hour, pay) for ag, p, lp, kw, hour, pay in TABLE_BIDS]


def table_requirements(lp45_t6: float = 378.2, lp45_t16: float = 86.1) -> list[Requirement]:
    return [
        Requirement(6, "LP1", 132.8, ALLOWED_PAYBACK, 1.5, 1.5),
        Requirement(6, ("LP4", "LP5"), lp45_t6, ALLOWED_PAYBACK, 1.5, 1.5),
        Requirement(16, ("LP4", "LP5"), lp45_t16, ALLOWED_PAYBACK, 1.5, 1.5),
    ]


def feeder_limit(
    hour: int, headroom: float, points=("LP1", "LP4", "LP5"), on=("LP4", "LP5")
) -> NetworkLimits:
    return NetworkLimits(
        points, (hour,), [[1.0 if lp in on else 0.0 for lp in points]], [[0.0]], [headroom], ("L7",)
    )


# ------------------------------------------------------------------- seeds/000 Table 5.2.4.1


def test_merit_order_at_lp1_t6():
    result = clear_central(table_requirements(), table_bids())
    assert result.feasible
    assert result.fractions["ag3-LP1"][6] == pytest.approx(1.000, abs=5e-4)
    assert result.fractions["ag2-LP1"][6] == pytest.approx(0.562, abs=5e-4)
    assert result.fractions["ag1-LP1"][6] == result.fractions["ag4-LP1"][6] == 0.0
    assert result.requirement_prices["LP1@t6"] == pytest.approx(0.58)  # the marginal bid's price


def test_merit_order_at_lp4_5_t16():
    # The FRT rounds the need to 86.1 kW; the table's total purchased at t16 is 86.135 kW.
    result = clear_central(table_requirements(lp45_t16=86.135), table_bids())
    fractions = {bid: result.fractions[bid][16] for bid in ("ag1-LP4", "ag2-LP4", "ag1-LP5", "ag3-LP4")}
    assert fractions == pytest.approx({"ag1-LP4": 1, "ag2-LP4": 1, "ag1-LP5": 1, "ag3-LP4": 0.2295}, abs=5e-5)
    assert result.fractions["ag4-LP4"][16] == 0.0
    assert result.procured_kw["LP4+LP5@t16"] == pytest.approx(86.135)
    # with the rounded 86.1 kW the last bid takes 0.2285, within the table's 0.230 to its digit
    rounded = clear_central(table_requirements(), table_bids())
    assert rounded.fractions["ag3-LP4"][16] == pytest.approx(0.230, abs=1.5e-3)


def test_payback_limit_at_t10_reproduces_the_whole_table():
    """The table's LP4–5 t6 column is not merit order (0.71 unused, 0.73 fully used): the
    payback of LP4 and ag1-LP5 at t10 is limited. With the t10 headroom equal to the payback the
    table's own solution puts there, the LP reproduces every percentage of the table."""
    bids = {bid.bid_id: bid for bid in table_bids()}
    at_t10 = sum(
        bid.payback_kw * bid.kw[h] / bid.offered_kw * TABLE_FRACTIONS.get((bid.bid_id, h), 0.0)
        for bid in bids.values()
        if bid.payback_hour == 10
        for h in bid.kw
    )
    requirements = table_requirements(lp45_t6=511.040 - 132.8, lp45_t16=86.135)  # the table's totals
    merit = clear_central(requirements, table_bids())
    assert merit.fractions["ag3-LP4"][6] > 0.2 and merit.fractions["ag4-LP5"][6] == 0.0
    result = clear_central(requirements, table_bids(), feeder_limit(10, at_t10))
    for bid_id, per_hour in result.fractions.items():
        for hour, fraction in per_hour.items():
            expected = TABLE_FRACTIONS.get((bid_id, hour), 0.0)
            assert fraction == pytest.approx(expected, abs=1.5e-3), (bid_id, hour)
    assert result.network_prices["L7", 10] > 0
    assert result.cost > merit.cost


# ---------------------------------------------------------------------------------- caps


def two_bids(**cheap) -> list[Bid]:
    values = {"price": 0.5, "payback_kw": 60.0, "payback_hour": 4} | cheap
    return [
        Bid("cheap", "ag1", values["price"], "LP1", {6: 50.0}, values["payback_hour"], values["payback_kw"]),
        Bid("dear", "ag2", 1.0, "LP1", {6: 50.0}, 4, 50.0),
    ]


def test_price_cap_excludes_a_bid():
    requirement = [Requirement(6, "LP1", 40.0, {4}, 1.5, price_cap=0.9)]
    result = clear_central(
        requirement, [*two_bids(price=0.5), Bid("over", "ag3", 0.95, "LP1", {6: 50}, 4, 50)]
    )
    assert result.fractions["over"][6] == 0.0
    assert "above the cap" in result.excluded["over", 6]
    capped = clear_central([Requirement(6, "LP1", 40.0, {4}, 1.5, price_cap=0.8)], two_bids(price=0.9))
    assert capped.fractions == {"cheap": {6: 0.0}, "dear": {6: 0.0}} and not capped.feasible
    assert capped.shortfall_kw == {"LP1@t6": pytest.approx(40.0)}


def test_payback_cap_and_payback_hour_exclude_bids():
    requirement = [Requirement(6, "LP1", 40.0, {4}, payback_cap=1.5, price_cap=1.5)]
    greedy = clear_central(requirement, two_bids(payback_kw=80.0))  # 160 % of its 50 kW
    assert greedy.fractions["cheap"][6] == 0.0 and greedy.fractions["dear"][6] == pytest.approx(0.8)
    assert "payback ratio" in greedy.excluded["cheap", 6]
    late = clear_central(requirement, two_bids(payback_hour=9))
    assert late.fractions["cheap"][6] == 0.0 and "not allowed" in late.excluded["cheap", 6]
    fine = clear_central(requirement, two_bids(payback_kw=75.0))  # exactly 150 %
    assert fine.fractions["cheap"][6] == pytest.approx(0.8)
    assert fine.payback_kw["cheap"] == pytest.approx(0.8 * 75.0)  # payback follows the fraction


def test_network_limit_in_the_payback_hour_moves_away_from_merit_order():
    requirement = [Requirement(6, ("LP1", "LP2"), 60.0, {4, 5}, 1.5, 1.5)]
    bids = [
        Bid("cheap", "ag1", 0.5, "LP1", {6: 60.0}, 4, 60.0),
        Bid("dear", "ag2", 0.7, "LP2", {6: 60.0}, 5, 60.0),
    ]
    limit = NetworkLimits(("LP1", "LP2"), (4, 5), [[1.0, 0.0]], [[80.0, 80.0]], [100.0], ("L2",))
    assert clear_central(requirement, bids).fractions == {"cheap": {6: 1.0}, "dear": {6: 0.0}}
    result = clear_central(requirement, bids, limit)
    assert result.fractions["cheap"][6] == pytest.approx(20.0 / 60.0)  # 20 kW of headroom at t4
    assert result.fractions["dear"][6] == pytest.approx(40.0 / 60.0)
    assert result.network_prices["L2", 4] == pytest.approx(0.2)  # 0.7 − 0.5 per kW of headroom
    assert result.network_prices["L2", 5] == 0.0


def test_infeasible_requirement_is_reported_with_its_shortfall():
    requirements = [Requirement(6, "LP1", 320.0, ALLOWED_PAYBACK, 1.5, 1.5), *table_requirements()[1:]]
    result = clear_central(requirements, table_bids())
    assert not result.feasible and result.status == "infeasible"
    offered = sum(kw for *_, lp, kw, _h, _p in TABLE_BIDS if lp == "LP1" for kw in kw.values())
    assert result.shortfall_kw == {"LP1@t6": pytest.approx(320.0 - offered)}
    assert "LP1@t6 cannot be met: short by" in result.report
    admm = clear_admm(requirements, table_bids())
    assert not admm.clearing.feasible and admm.clearing.shortfall_kw == result.shortfall_kw


def test_network_that_makes_it_infeasible_is_reported():
    requirement = [Requirement(6, "LP1", 60.0, {4}, 1.5, 1.5)]
    bids = [Bid("only", "ag1", 0.5, "LP1", {6: 60.0}, 4, 60.0)]
    limit = NetworkLimits(("LP1",), (4,), [[1.0]], [[90.0]], [100.0], ("L2",))
    result = clear_central(requirement, bids, limit)
    assert not result.feasible
    assert sum(result.shortfall_kw.values()) + sum(result.network_excess.values()) == pytest.approx(50.0)
    # ADMM cannot tell (the operator never sees the network): it stops and says so
    admm = clear_admm(requirement, bids, limit, max_iterations=300)
    assert not admm.converged and admm.clearing.status == "not converged" and admm.iterations == 300
    assert admm.primal_residual > 1e-3


@pytest.mark.parametrize(
    ("requirement", "bid", "message"),
    [
        (Requirement(6, "LP1", -1.0, {4}), None, "minimum -1.0 kW"),
        (Requirement(6, "LP1", 10.0, {4}, payback_cap=-0.5), None, "payback cap"),
        (Requirement(6, "LP1", 10.0, {6}), None, "congestion hour cannot be a payback hour"),
        (None, Bid("b", "ag", 0.5, "LP1", {6: -3.0}, 4, 1.0), "negative"),
        (None, Bid("b", "ag", 0.5, "LP9", {6: 3.0}, 4, 1.0), "unknown load point 'LP9'"),
        (None, Bid("b", "ag", -0.5, "LP1", {6: 3.0}, 4, 1.0), "price"),
        (None, Bid("b", "ag", 0.5, "LP1", {6: 3.0}, 6, 1.0), "payback hour t6"),
    ],
)
def test_invalid_inputs_are_refused_in_plain_words(requirement, bid, message):
    requirements = [requirement or Requirement(6, "LP1", 10.0, {4})]
    bids = [bid or Bid("ok", "ag", 0.5, "LP1", {6: 20.0}, 4, 20.0)]
    with pytest.raises(PricingInputError, match=message):
        clear_central(requirements, bids)


def test_duplicate_bids_and_overlapping_requirements_are_refused():
    bid = Bid("b", "ag", 0.5, "LP1", {6: 3.0}, 4, 1.0)
    with pytest.raises(PricingInputError, match="duplicate"):
        clear_central([Requirement(6, "LP1", 1.0, {4})], [bid, bid])
    with pytest.raises(PricingInputError, match="two requirements"):
        clear_central([Requirement(6, "LP1", 1.0, {4}), Requirement(6, ("LP1", "LP2"), 1.0, {4})], [bid])
    limit = NetworkLimits(("LP2",), (4,), [[1.0]], [[0.0]], [10.0])
    with pytest.raises(PricingInputError, match="not in the network"):
        clear_central([Requirement(6, "LP1", 1.0, {4})], [bid], limit)


# ------------------------------------------------------------------------- ADMM vs central


def assert_agree(requirements, bids, network=None):
    central = clear_central(requirements, bids, network)
    admm = clear_admm(requirements, bids, network)
    assert central.feasible and admm.converged, admm
    assert admm.clearing.cost == pytest.approx(central.cost, rel=1e-4)
    for bid_id, per_hour in central.fractions.items():
        assert admm.clearing.fractions[bid_id] == pytest.approx(per_hour, abs=1e-4), bid_id
    return central, admm


def test_admm_agrees_with_central_on_the_table():
    assert_agree(table_requirements(), table_bids())
    central, admm = assert_agree(table_requirements(378.24, 86.135), table_bids(), feeder_limit(10, 247.93))
    assert admm.clearing.network_prices["L7", 10] == pytest.approx(central.network_prices["L7", 10], rel=1e-3)
    assert admm.clearing.requirement_prices == pytest.approx(central.requirement_prices, rel=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_admm_agrees_with_central_on_random_markets(seed):
    requirements, bids, network = random_market(20, seed)
    central, _ = assert_agree(requirements, bids, network)
    assert np.any(np.array(list(central.network_prices.values())) > 0)  # the network matters
