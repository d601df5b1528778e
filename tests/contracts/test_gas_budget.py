"""The gas budget of meter readings (issue 13): benchmarks/gas.py, run as a user runs it,
shows at most 10,000 gas per reading in batches of 100 averaged over a 15-minute slot.
Gas is deterministic, so this is a test, not a timing."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

from contracts.paths import PROJECT_ROOT
from contracts.tariff import Tariff
from tests.contracts.test_dynamic_tariff import rolled_back
from tests.contracts.test_flexibility_market import (
    MAX_BIDS,
    MAX_METERS,
    authorised_meters,
    bid,
    fill_bids,
    flex_chain,  # noqa: F401  (fixture)
    requirement,
    to_deadline,
)

MAX_ENTRIES = 96

BUDGET = 10_000


def test_a_reading_costs_at_most_10k_gas_averaged_over_a_slot():
    result = subprocess.run(
        [sys.executable, "benchmarks/gas.py"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = re.search(r"^\s+100\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)$", result.stdout, re.MULTILINE)
    assert row, result.stdout
    first, later, average = (int(value.replace(",", "")) for value in row.groups())
    assert later < first and average <= BUDGET, result.stdout


# ------------------------------------------------------- issue 15: tariff and flexibility market
# Worst cases by the contracts' own bounds (gas used, london): a posting of MAX_ENTRIES tariffs,
# a member's settlement with a tariff on each of its meters, a requirement with MAX_LOAD_POINTS
# load points and MAX_PAYBACK_HOURS payback hours, a bid with MAX_METERS_PER_BID meters, a
# clearing of MAX_BIDS bids and the settlement of a bid with MAX_METERS_PER_BID meters (15-min
# slots: 4 slots per hour, 1 + BASELINE_DAYS hours read per meter).
GAS_BUDGETS = {
    "DynamicTariff.postTariffs": 2_800_000,  # 96 entries
    "Settlement.settle": 350_000,  # one member, two meters with a tariff
    "FlexibilityMarket.authorizeAggregator": 65_000,
    "FlexibilityMarket.postRequirement": 300_000,  # 8 load points, 8 payback hours
    "FlexibilityMarket.placeBid": 660_000,  # 8 meters
    "FlexibilityMarket.clear": 1_100_000,  # 32 bids
    "FlexibilityMarket.settleBid": 640_000,  # 8 meters, 4 hours of 4 slots each
    "FlexibilityMarket.refund": 50_000,
}


@pytest.fixture
def flex_env(flex_chain):  # noqa: F811
    with rolled_back(flex_chain):
        yield flex_chain


TARIFF_GAS_PER_METER = 25_000  # what charging a meter's tariff adds to its member's settlement


def test_the_tariff_and_flexibility_market_functions_stay_within_their_gas_budgets(flex_env):
    env = flex_env
    used = {}
    flex, tariff = env.flex, env.community.tariff
    hour = env.hour
    entries = [Tariff(1, hour + i, Decimal("0.2")) for i in range(MAX_ENTRIES)]
    used["DynamicTariff.postTariffs"] = tariff.post_tariffs(env["dso"], entries)["gasUsed"]
    used["FlexibilityMarket.authorizeAggregator"] = flex.authorize_aggregator(
        env["carol"], "MPV", env["aggregator"].address
    )["gasUsed"]
    wide = requirement(
        env, min_kw=1.0, load_points=tuple(range(1, 9)), payback_hours=tuple(hour + 1 + i for i in range(8))
    )
    receipt = env.client.transact(flex.post_requirement_call(wide), env["dso"])
    used["FlexibilityMarket.postRequirement"] = receipt["gasUsed"]
    rid = env.client.events(flex.contract, "RequirementPosted", receipt)[0]["id"]
    meters = authorised_meters(env, MAX_METERS)
    eight_meters = bid(
        rid, meters=meters, price=Decimal("0.01"), kw=1.0, payback_kw=1.0, payback_hour=hour + 1
    )
    receipt = env.client.transact(flex.place_bid_call(eight_meters), env["aggregator"])
    used["FlexibilityMarket.placeBid"] = receipt["gasUsed"]
    eight = env.client.events(flex.contract, "BidPlaced", receipt)[0]["bidId"]
    many = fill_bids(env, rid, MAX_BIDS - 1)
    to_deadline(env, rid)
    used["FlexibilityMarket.clear"] = flex.clear(env["operator"], rid, [1.0] * (1 + len(many)))["gasUsed"]
    env.travel(flex.final_time(hour))
    receipt = env.client.transact(flex.settle_bid_call(eight), env["stranger"])
    used["FlexibilityMarket.settleBid"] = receipt["gasUsed"]
    for bid_id in many:
        env.client.transact(flex.settle_bid_call(bid_id), env["stranger"])
    used["FlexibilityMarket.refund"] = env.client.transact(flex.refund_call(rid), env["stranger"])["gasUsed"]
    slot = hour * 60 // 15
    for each in (slot - 1, slot):
        env.client.transact(env.community.market.contract.functions.finalizeSlot(each), env["stranger"])
    settle = env.community.settlement.settle_call(slot - 1, [env["bob"].address])
    without_tariff = env.client.transact(settle, env["stranger"])["gasUsed"]
    # bob: 2 meters (one of his EV), both silent, both charged the tariff
    settle = env.community.settlement.settle_call(slot, [env["bob"].address])
    used["Settlement.settle"] = env.client.transact(settle, env["stranger"])["gasUsed"]
    assert used["Settlement.settle"] - without_tariff <= 2 * TARIFF_GAS_PER_METER
    over = {name: (gas, GAS_BUDGETS[name]) for name, gas in used.items() if gas > GAS_BUDGETS[name]}
    assert not over, over
