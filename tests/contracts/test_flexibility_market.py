"""FlexibilityMarket (issue 15, on chain): the DSO escrows a requirement's budget, aggregators bid
with meters their owners authorised, the market operator posts checked fractions, delivery
against the baseline is paid pay-as-bid (nothing for what was not delivered), the rest of the
escrow returns to the DSO. Every refusal and role, and adversarial properties.

Community: ``tests.market_setup`` (every meter at bus 1), its own deployment. Baseline: the
meters MA, MB, MD consume 10 kW and MEV 2 kW in hours B, B+24, B+48; the congestion hour is
H = B + 72 and each test starts in hour H − 2 (the baseline days are over).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import clock, units
from contracts.flexibility import Bid, Requirement, escrow_units
from contracts.ledger import Reading
from contracts.registry import Meter, Role
from contracts.tariff import hour_of, hour_start
from tests.community_setup import SETUP_GAS
from tests.contracts.test_dynamic_tariff import (
    chain_examples,
    expect_refused_by_every_other_role,
    rolled_back,
    state_changing,
)
from tests.market_setup import MISSING_MINUTE_W, SLOT_MINUTES, TOKEN, deploy_market_community
from tests.reverts import expect_revert

BUS = 1
BASELINE_W = {"MA": 10_000, "MB": 10_000, "MD": 10_000, "MEV": 2_000}
PRICE_CAP = Decimal(1)  # tokens per kW
DSO_TOKENS = 1000
ZERO_ADDRESS = "0x" + "00" * 20
MAX_BIDS, MAX_METERS, MAX_POINTS, MAX_PAYBACKS = 32, 8, 8, 8
MAX_POWER_W, MAX_PRICE_CAP, MAX_PAYBACK_CAP = 100_000_000, 1000 * TOKEN, 5000


class FlexEnv:
    """The market community plus the flexibility market's test helpers (raw web3 via ``chain``)."""

    def __init__(self, chain, hour: int):
        self.chain, self.hour = chain, hour
        self.flex = chain.community.flexibility_market

    def __getattr__(self, name):
        return getattr(self.chain, name)

    def __getitem__(self, name):
        return self.chain[name]

    def wallet(self, name: str) -> int:
        return self.chain.wallet(name)

    def held(self) -> int:
        return self.chain.wallet(self.flex.address)


def record_hour(env, hour: int, powers: dict[str, int]) -> None:
    """A reading of every minute of ``hour`` for each meter in ``powers`` (W), slot by slot."""
    for slot in range(hour * 60 // SLOT_MINUTES, (hour + 1) * 60 // SLOT_MINUTES):
        env.travel((slot + 1) * SLOT_MINUTES * 60)
        start = slot * SLOT_MINUTES
        readings = [
            Reading(meter, clock.minute_start(start + i), units.w_to_kw(power), 0.0, 1.0, 0.0)
            for meter, power in powers.items()
            for i in range(SLOT_MINUTES)
        ]
        if readings:
            env.community.ledger.record_readings(env["gateway"], readings)


@pytest.fixture(scope="module")
def flex_chain(artifacts) -> FlexEnv:
    chain = deploy_market_community(artifacts)
    community, keyring = chain.community, chain.keyring
    flex = community.flexibility_market
    calls = [
        (community.registry.grant_role_call(Role.AGGREGATOR, keyring["dave"].address), keyring["admin"]),
        (community.token.mint_call(keyring["dso"].address, DSO_TOKENS), keyring["operator"]),
        (community.token.approve_call(flex.address), keyring["dso"]),
        (flex.authorize_aggregator_call("MA", keyring["aggregator"].address), keyring["alice"]),
        (flex.authorize_aggregator_call("MB", keyring["aggregator"].address), keyring["bob"]),
        (flex.authorize_aggregator_call("MEV", keyring["aggregator"].address), keyring["bob"]),
        (flex.authorize_aggregator_call("MD", keyring["dave"].address), keyring["dave"]),
    ]
    chain.client.transact_all(calls, gas=SETUP_GAS)
    baseline = hour_of(chain.now()) + 1
    for day in range(3):
        record_hour(chain, baseline + 24 * day, BASELINE_W)
    hour = baseline + 72
    chain.travel(hour_start(hour - 2))
    return FlexEnv(chain, hour)


@pytest.fixture
def env(flex_chain: FlexEnv):
    with rolled_back(flex_chain):
        yield flex_chain


def requirement(env, **changes) -> Requirement:
    base = Requirement(
        hour=env.hour,
        load_points=(BUS, 7),
        min_kw=5.0,
        payback_hours=(env.hour + 2, env.hour - 3),
        payback_cap=1.5,
        price_cap=PRICE_CAP,
        bid_deadline=hour_start(env.hour) - 600,
    )
    return replace(base, **changes)


def bid(requirement_id: int, **changes) -> Bid:
    """A bid of the aggregator's meters MA and MB (6 kW at 0.5 token/kW) unless ``changes`` say otherwise."""
    if "meters" in changes:
        changes["meters"] = tuple(changes["meters"])
    return replace(Bid(requirement_id, BUS, Decimal("0.5"), 6.0, 0, 6.0, ("MA", "MB")), **changes)


def post(env, **changes) -> int:
    return env.flex.post_requirement(env["dso"], requirement(env, **changes))


def place(env, requirement_id: int, aggregator: str = "aggregator", **changes) -> int:
    if "payback_hour" not in changes:
        changes["payback_hour"] = env.flex.requirement(requirement_id).requirement.hour + 2
    return env.flex.place_bid(env[aggregator], bid(requirement_id, **changes))


def to_deadline(env, requirement_id: int) -> None:
    env.travel(env.flex.requirement(requirement_id).requirement.bid_deadline)


def clear(env, requirement_id: int, fractions) -> None:
    to_deadline(env, requirement_id)
    env.flex.clear(env["operator"], requirement_id, fractions)


def deliver_and_settle(env, bid_ids, powers: dict[str, int], hour: int | None = None):
    """Record ``hour`` (default H) with ``powers``, wait until it is final, settle ``bid_ids``."""
    hour = env.hour if hour is None else hour
    record_hour(env, hour, powers)
    env.travel(env.flex.final_time(hour))
    return [env.flex.settle_bid(env["stranger"], bid_id) for bid_id in bid_ids]


def tokens(amount) -> int:
    return units.tokens_to_units(amount)


# ------------------------------------------------------------------ happy paths


def test_a_requirement_escrows_its_budget_and_records_its_baseline(env):
    before = env.wallet("dso")
    rid = post(env)
    posted = env.flex.requirement(rid)
    assert posted.escrow == 5 and env.held() == 5 * TOKEN == before - env.wallet("dso")
    assert escrow_units(5.0, PRICE_CAP) == 5 * TOKEN
    assert posted.dso == env["dso"].address and posted.requirement == requirement(env)
    assert posted.baseline_hour == env.hour - 24  # the latest day whose hour had ended
    assert (posted.cleared, posted.refunded, posted.paid, posted.bid_ids) == (False, False, 0, ())
    baseline_kw, _ = env.flex.measure(["MA", "MB"], env.hour, posted.baseline_hour)
    assert baseline_kw == 20.0


@pytest.mark.parametrize(
    "powers, fraction, delivered_w, payment",
    [
        ({"MA": 7000, "MB": 9000}, 1.0, 4000, 2 * TOKEN),  # partial delivery: paid for 4 kW
        ({"MA": 5000, "MB": 5000}, 1.0, 6000, 3 * TOKEN),  # more than cleared: paid for the 6 kW cleared
        ({"MA": 10_000, "MB": 10_000}, 1.0, 0, 0),  # as in the baseline: nothing
        ({"MA": 15_000, "MB": 10_000}, 1.0, 0, 0),  # more consumption: nothing, no charge either
        ({"MA": 0, "MB": 0}, 0.5, 3000, 3 * TOKEN // 2),  # half cleared: paid for at most 3 kW
        ({"MA": 0}, 1.0, 0, 0),  # MB silent: its missing minutes count at missingMinuteW
    ],
)
def test_delivery_against_the_baseline_is_paid_pay_as_bid(env, powers, fraction, delivered_w, payment):
    rid = post(env, min_kw=3.0)  # 3 tokens escrowed
    bid_id = place(env, rid)
    clear(env, rid, [fraction])
    aggregator, dso = env.wallet("aggregator"), env.wallet("dso")
    (settled,) = deliver_and_settle(env, [bid_id], powers)
    assert settled.delivered_kw == units.w_to_kw(delivered_w)
    assert settled.payment == units.units_to_tokens(payment)
    assert settled.baseline_kw == 20.0
    metered = sum(powers.values()) + (MISSING_MINUTE_W if "MB" not in powers else 0)
    assert settled.metered_kw == units.w_to_kw(metered)
    assert env.wallet("aggregator") - aggregator == payment
    assert env.flex.refund(env["stranger"], rid) == units.units_to_tokens(3 * TOKEN - payment)
    assert env.wallet("dso") - dso == 3 * TOKEN - payment
    assert env.held() == 0  # escrow in = payments + refund
    posted = env.flex.requirement(rid)
    assert (posted.paid, posted.refunded, posted.settled_bids) == (units.units_to_tokens(payment), True, 1)


def test_several_bids_are_cleared_checked_and_paid_each_for_its_own_meters(env):
    rid = post(env)
    first = place(env, rid, price=Decimal("0.5"), kw=4.0, payback_kw=2.0)  # MA, MB
    second = place(env, rid, "dave", price=Decimal("0.8"), kw=3.0, payback_kw=0.0, meters=("MD",))
    assert env.flex.requirement(rid).bid_ids == (first, second)
    to_deadline(env, rid)
    receipt = env.flex.clear(env["operator"], rid, [1.0, 0.5])
    cleared = env.events("RequirementCleared", receipt, env.flex.contract)[0]
    assert (cleared["procuredW"], cleared["cost"]) == (5500, 2 * TOKEN + 12 * TOKEN // 10)
    assert env.flex.bid(second).cleared_kw == 1.5 and env.flex.bid(second).fraction == 0.5
    # MA, MB deliver 3 kW in all; dave's MD delivers 10 kW of which 1.5 kW were cleared
    first_paid, second_paid = deliver_and_settle(env, [first, second], {"MA": 8000, "MB": 9000, "MD": 0})
    assert (first_paid.delivered_kw, first_paid.payment) == (3.0, Decimal("1.5"))
    assert (second_paid.delivered_kw, second_paid.payment) == (1.5, Decimal("1.2"))
    assert (
        first_paid.aggregator == env["aggregator"].address and second_paid.aggregator == env["dave"].address
    )
    assert env.flex.refund(env["dso"], rid) == 5 - Decimal("2.7")
    assert env.held() == 0


def test_an_uncleared_requirement_is_refunded_in_full_once_its_hour_started(env):
    rid = post(env)
    place(env, rid)
    expect_revert("ClearingStillOpen", lambda: env.flex.refund(env["dso"], rid), id=rid)
    env.travel(hour_start(env.hour))
    before = env.wallet("dso")
    assert env.flex.refund(env["aggregator"], rid) == 5  # anyone may call; the DSO gets it
    assert env.wallet("dso") - before == 5 * TOKEN and env.held() == 0
    expect_revert("AlreadyRefunded", lambda: env.flex.refund(env["dso"], rid), id=rid)


# ------------------------------------------------------------ adversaries


def test_consumption_raised_after_the_posting_does_not_raise_the_baseline(env):
    """A requirement for H + 24 posted now has its baseline on H − 24 and before: the
    aggregator's members consume 30 kW in hour H (after the posting) and normally at H + 24,
    and are paid nothing."""
    later = env.hour + 24
    rid = post(env, hour=later, payback_hours=(later + 2,), bid_deadline=hour_start(later) - 600)
    assert env.flex.requirement(rid).baseline_hour == env.hour - 24
    bid_id = place(env, rid)
    record_hour(env, env.hour, {"MA": 30_000, "MB": 30_000})
    clear(env, rid, [1.0])
    (settled,) = deliver_and_settle(env, [bid_id], {"MA": 10_000, "MB": 10_000}, hour=later)
    assert (settled.baseline_kw, settled.payment) == (20.0, 0)


def test_an_aggregator_is_paid_once_and_only_for_meters_whose_owner_consented(env):
    rid = post(env)
    expect_revert(  # carol never authorised anybody for her PV meter
        "AggregatorNotAuthorized",
        lambda: place(env, rid, meters=("MA", "MPV")),
        meter=units.encode_id("MPV"),
        aggregator=env["aggregator"].address,
    )
    expect_revert(  # dave authorised himself, not the aggregator
        "AggregatorNotAuthorized", lambda: place(env, rid, meters=("MD",)), meter=units.encode_id("MD")
    )
    env.flex.authorize_aggregator(env["alice"], "MA", ZERO_ADDRESS)  # alice withdraws her consent
    expect_revert("AggregatorNotAuthorized", lambda: place(env, rid), meter=units.encode_id("MA"))
    env.flex.authorize_aggregator(env["alice"], "MA", env["aggregator"].address)
    bid_id = place(env, rid)
    expect_revert(  # a meter backs one bid per hour: not twice, nor in another requirement for H
        "MeterAlreadyBid",
        lambda: place(env, rid, meters=("MEV", "MB")),
        meter=units.encode_id("MB"),
        hour=env.hour,
        bidId=bid_id,
    )
    other = post(env, load_points=(BUS,))
    expect_revert("MeterAlreadyBid", lambda: place(env, other, meters=("MA",)), bidId=bid_id)
    expect_revert("MeterAlreadyBid", lambda: place(env, other, meters=("MEV", "MEV")), bidId=bid_id + 1)
    clear(env, rid, [1.0])
    deliver_and_settle(env, [bid_id], {"MA": 5000, "MB": 5000})
    expect_revert("BidAlreadySettled", lambda: env.flex.settle_bid(env["aggregator"], bid_id), bidId=bid_id)


def test_the_dso_cannot_take_back_escrow_owed_to_a_cleared_bid(env):
    rid = post(env)
    bid_id = place(env, rid)
    clear(env, rid, [1.0])
    for when in (hour_start(env.hour), env.flex.final_time(env.hour)):
        env.travel(when)
        expect_revert("BidsNotSettled", lambda: env.flex.refund(env["dso"], rid), id=rid, unsettled=1)
    (settled,) = deliver_and_settle(env, [bid_id], {"MA": 0, "MB": 0}, hour=env.hour + 1)  # H is silent
    assert settled.payment == 0  # every minute of H is missing: counted at missingMinuteW
    assert env.flex.refund(env["dso"], rid) == 5


# ------------------------------------------------------------------ refusals


def test_requirements_out_of_range_are_refused(env):
    now = env.now()
    hour = env.hour
    horizon = 7 * 24 * 3600
    cases = [
        ("HourOutOfRange", {"hour": hour_of(now)}, {"hour": hour_of(now)}),
        ("HourOutOfRange", {"hour": hour_of(now) + 24 * 7 + 1}, {"horizonEnd": now + horizon}),
        ("InvalidBidDeadline", {"bid_deadline": now}, {"bidDeadline": now, "blockTime": now}),
        ("InvalidBidDeadline", {"bid_deadline": hour_start(hour) - 299}, {"latest": hour_start(hour) - 300}),
        ("InvalidLoadPointCount", {"load_points": ()}, {"count": 0, "maxCount": MAX_POINTS}),
        ("InvalidLoadPointCount", {"load_points": tuple(range(9))}, {"count": 9}),
        ("TooManyPaybackHours", {"payback_hours": tuple(hour + 1 + i for i in range(9))}, {"count": 9}),
        ("InvalidPaybackHour", {"payback_hours": (hour,)}, {"paybackHour": hour, "hour": hour}),
        ("InvalidPaybackHour", {"payback_hours": (hour + 25,)}, {"paybackHour": hour + 25}),
        ("InvalidPaybackHour", {"payback_hours": (hour - 25,)}, {"paybackHour": hour - 25}),
        ("InvalidPower", {"min_kw": 0.0}, {"powerW": 0, "maxW": MAX_POWER_W}),
        ("InvalidPower", {"min_kw": 100_000.001}, {"powerW": MAX_POWER_W + 1}),
        ("InvalidPriceCap", {"price_cap": Decimal(0)}, {"priceCap": 0, "maxPriceCap": MAX_PRICE_CAP}),
        ("InvalidPriceCap", {"price_cap": Decimal(1001)}, {"priceCap": 1001 * TOKEN}),
        ("InvalidPaybackCap", {"payback_cap": 5.001}, {"paybackCapPermille": 5001, "maxPermille": 5000}),
    ]
    for error, changes, expected in cases:
        expect_revert(error, lambda c=changes: post(env, **c), **expected)
    post(env, payback_hours=(hour + 24, hour - 24), payback_cap=5.0, load_points=tuple(range(8)))  # limits
    env.community.token.approve(env["dso"], env.flex.address, Decimal(0))
    expect_revert("ERC20InsufficientAllowance", lambda: post(env))


def test_bids_out_of_range_are_refused(env):
    rid = post(env)
    payback = env.hour + 2
    cases = [
        ("UnknownRequirement", {"requirement_id": 99}, {"id": 99}),
        ("InvalidBidPrice", {"price": Decimal(0)}, {"price": 0, "priceCap": TOKEN}),
        ("InvalidBidPrice", {"price": PRICE_CAP + Decimal("1e-18")}, {"price": TOKEN + 1}),
        ("InvalidPower", {"kw": 0.0, "payback_kw": 0.0}, {"powerW": 0}),
        ("NotALoadPoint", {"load_point": 3}, {"bus": 3}),
        ("PaybackHourNotAllowed", {"payback_hour": payback + 1}, {"paybackHour": payback + 1}),
        ("PaybackAboveCap", {"payback_kw": 9.001}, {"paybackW": 9001, "maxW": 9000}),
        ("InvalidMeterCount", {"meters": ()}, {"count": 0, "maxCount": MAX_METERS}),
        ("InvalidMeterCount", {"meters": ("MA",) * 9}, {"count": 9}),
        ("UnknownMeter", {"meters": ("NOPE",)}, {"meter": units.encode_id("NOPE")}),
    ]
    for error, changes, expected in cases:
        changes = {"payback_hour": payback, **changes}
        expect_revert(
            error,
            lambda c=changes: env.flex.place_bid(env["aggregator"], bid(**{"requirement_id": rid, **c})),
            **expected,
        )
    registry = env.community.registry
    registry.register_meter(env["admin"], Meter("M2", 2, env["alice"].address, env["alice"].address))
    env.flex.authorize_aggregator(env["alice"], "M2", env["aggregator"].address)
    expect_revert(
        "MeterNotAtBus",
        lambda: place(env, rid, meters=("M2",)),
        meter=units.encode_id("M2"),
        meterBus=2,
        bus=BUS,
    )
    registry.deregister_meter(env["admin"], "MEV")
    expect_revert("UnknownMeter", lambda: place(env, rid, meters=("MEV",)), meter=units.encode_id("MEV"))
    to_deadline(env, rid)
    deadline = env.flex.requirement(rid).requirement.bid_deadline
    expect_revert("BiddingClosed", lambda: place(env, rid), id=rid, bidDeadline=deadline, blockTime=deadline)


def authorised_meters(env, count: int, bus: int = BUS) -> list[str]:
    """``count`` new meters of alice at ``bus``, authorised for the aggregator."""
    first = len(env.community.registry.meter_ids())
    names = [f"X{first + i:03d}" for i in range(count)]
    admin, alice = env["admin"], env["alice"]
    env.client.transact_all(
        [
            (env.community.registry.register_meter_call(Meter(n, bus, alice.address, alice.address)), admin)
            for n in names
        ],
        gas=SETUP_GAS,
    )
    env.client.transact_all(
        [(env.flex.authorize_aggregator_call(n, env["aggregator"].address), alice) for n in names],
        gas=SETUP_GAS,
    )
    return names


def fill_bids(env, rid: int, count: int, meters_per_bid: int = 1) -> list[int]:
    """``count`` bids of 1 kW at 0.01 token/kW on ``rid``, each with its own new meters."""
    meters = authorised_meters(env, count * meters_per_bid)
    payback = env.flex.requirement(rid).requirement.hour + 2
    calls = [
        (
            env.flex.place_bid_call(
                bid(
                    rid,
                    meters=meters[i * meters_per_bid : (i + 1) * meters_per_bid],
                    price=Decimal("0.01"),
                    kw=1.0,
                    payback_kw=1.0,
                    payback_hour=payback,
                )
            ),
            env["aggregator"],
        )
        for i in range(count)
    ]
    env.client.transact_all(calls, gas=3_000_000)
    return list(env.flex.requirement(rid).bid_ids[-count:])


def test_a_requirement_takes_at_most_max_bids(env):
    rid = post(env, min_kw=1.0)
    fill_bids(env, rid, MAX_BIDS - 1)
    place(env, rid, meters=("MEV",), payback_hour=0, payback_kw=0.0)  # no payback: any hour
    expect_revert("TooManyBids", lambda: place(env, rid, meters=("MEV",)), id=rid, maxBids=MAX_BIDS)


def test_clearings_that_break_the_rules_are_refused(env):
    rid = post(env)
    empty = post(env, load_points=(BUS,))
    first = place(env, rid, price=PRICE_CAP, kw=4.0, payback_kw=0.0)
    place(env, rid, "dave", price=PRICE_CAP, kw=3.0, payback_kw=0.0, meters=("MD",))
    operator = env["operator"]
    deadline, start = env.flex.requirement(rid).requirement.bid_deadline, hour_start(env.hour)
    expect_revert(
        "ClearingWindowClosed",
        lambda: env.flex.clear(operator, rid, [1.0, 1.0]),
        id=rid,
        opensAt=deadline,
        closesAt=start,
    )
    to_deadline(env, rid)
    expect_revert("UnknownRequirement", lambda: env.flex.clear(operator, 99, []), id=99)
    expect_revert(
        "FractionCountMismatch", lambda: env.flex.clear(operator, rid, [1.0]), id=rid, expected=2, given=1
    )
    too_big = env.flex.contract.functions.clear(rid, [1_000_000, 1_000_001])
    expect_revert(
        "FractionOutOfRange", lambda: env.client.transact(too_big, operator), index=1, fractionPpm=1_000_001
    )
    expect_revert(
        "RequirementNotMet",
        lambda: env.flex.clear(operator, rid, [1.0, 0.3]),
        id=rid,
        procuredW=4900,
        neededW=5000,
    )
    expect_revert(  # 7 kW at the cap cost 7 tokens; 5 are escrowed
        "BudgetExceeded",
        lambda: env.flex.clear(operator, rid, [1.0, 1.0]),
        id=rid,
        cost=7 * TOKEN,
        escrow=5 * TOKEN,
    )
    expect_revert("BidNotCleared", lambda: env.flex.settle_bid(env["stranger"], first), bidId=first)
    exact = env.flex.contract.functions.clear(rid, [1_000_000, 333_334])  # 4 kW + 1 kW at 1 token/kW
    env.client.transact(exact, operator)
    assert env.flex.bid(first + 1).cleared_kw == 1.0
    expect_revert("AlreadyCleared", lambda: env.flex.clear(operator, rid, [1.0, 1.0]), id=rid)
    clear_empty = env.flex.contract.functions.clear(empty, [])
    expect_revert("RequirementNotMet", lambda: env.client.transact(clear_empty, operator), procuredW=0)
    env.travel(start)
    expect_revert("ClearingWindowClosed", lambda: env.client.transact(clear_empty, operator), blockTime=start)


def test_settlements_and_refunds_out_of_turn_are_refused(env):
    rid = post(env)
    kept = place(env, rid, kw=6.0)
    dropped = place(env, rid, "dave", meters=("MD",))
    expect_revert("UnknownBid", lambda: env.flex.settle_bid(env["stranger"], 99), bidId=99)
    expect_revert("UnknownBid", lambda: env.flex.bid(99), bidId=99)
    expect_revert("UnknownRequirement", lambda: env.flex.requirement(99), id=99)
    expect_revert("UnknownRequirement", lambda: env.flex.refund(env["dso"], 99), id=99)
    clear(env, rid, [1.0, 0.0])
    final = env.flex.final_time(env.hour)
    expect_revert(
        "HourNotFinal",
        lambda: env.flex.settle_bid(env["stranger"], kept),
        hour=env.hour,
        finalTime=final,
        blockTime=env.now(),
    )
    env.travel(final)
    expect_revert("BidNotCleared", lambda: env.flex.settle_bid(env["stranger"], dropped), bidId=dropped)
    expect_revert("BidsNotSettled", lambda: env.flex.refund(env["dso"], rid), unsettled=1)
    env.flex.settle_bid(env["dso"], kept)
    env.flex.refund(env["dso"], rid)
    expect_revert("AlreadyRefunded", lambda: env.flex.refund(env["dso"], rid), id=rid)


def test_only_a_meters_owner_authorises_an_aggregator_for_it(env):
    for holder in ("bob", "carol", "dave"):
        expect_revert(
            "NotMeterOwner",
            lambda h=holder: env.flex.authorize_aggregator(env[h], "MA", env[h].address),
            meter=units.encode_id("MA"),
            account=env[holder].address,
            owner=env["alice"].address,
        )
    expect_revert("UnknownMeter", lambda: env.flex.authorize_aggregator(env["alice"], "NOPE", ZERO_ADDRESS))
    receipt = env.flex.authorize_aggregator(env["alice"], "MA", env["dave"].address)
    event = env.events("AggregatorAuthorized", receipt, env.flex.contract)[0]
    assert (event["owner"], event["aggregator"]) == (env["alice"].address, env["dave"].address)
    assert env.flex.aggregator_of("MA") == env["dave"].address


def test_the_contract_refuses_zero_addresses(env):
    addresses = env.community.deployment.addresses
    parts = [addresses[name] for name in ("MeasurementLedger", "Settlement", "CommunityToken")]
    for i in range(3):
        arguments = [*parts[:i], ZERO_ADDRESS, *parts[i + 1 :]]
        expect_revert(
            "ZeroAddress",
            lambda a=arguments: env.client.deploy(
                "FlexibilityMarket", env["admin"], addresses["CommunityRegistry"], *a
            ),
        )


# ---------------------------------------------------------------------- roles

ANYONE = "anyone"
ACCESS = {
    "authorizeAggregator": Role.MEMBER,  # and only for the caller's own meter
    "postRequirement": Role.DSO,
    "placeBid": Role.AGGREGATOR,
    "clear": Role.MARKET_OPERATOR,
    "settleBid": ANYONE,  # pays the bidder
    "refund": ANYONE,  # pays the requirement's DSO
}


def _guarded_calls(env) -> dict:
    rid = post(env)
    functions = env.flex.contract.functions
    return {
        "authorizeAggregator": (
            functions.authorizeAggregator(units.encode_id("MA"), env["aggregator"].address),
            ("alice",),
        ),
        "postRequirement": (env.flex.post_requirement_call(requirement(env)), ("dso",)),
        "placeBid": (env.flex.place_bid_call(bid(rid, payback_hour=env.hour + 2)), ("aggregator",)),
        "clear": (functions.clear(rid, [1_000_000]), ("operator",)),
    }


def test_every_state_changing_function_names_who_may_call_it_and_refuses_every_other_role(env):
    assert state_changing(env.flex.contract) == set(ACCESS)
    calls = _guarded_calls(env)
    assert set(calls) == {name for name, who in ACCESS.items() if who != ANYONE}
    for name, (call, allowed) in calls.items():
        expect_refused_by_every_other_role(env, call, ACCESS[name])
        if name == "clear":
            to_deadline(env, 1)
        for holder in allowed:
            env.client.transact(call, env[holder])


# ------------------------------------------------------------------ properties

POWER = st.integers(min_value=0, max_value=25_000)


@chain_examples(5)
@given(
    first_fraction=st.integers(min_value=0, max_value=10**6),
    second_fraction=st.integers(min_value=0, max_value=10**6),
    powers=st.fixed_dictionaries({"MA": POWER, "MB": POWER, "MD": POWER}),
    silent=st.sets(st.sampled_from(["MA", "MB", "MD"]), max_size=1),
    grabs=st.lists(st.sampled_from(["settle_again", "refund_early", "bid_late", "clear_again"]), max_size=4),
)
def test_escrow_is_conserved_and_pays_only_delivered_flexibility(
    env, first_fraction, second_fraction, powers, silent, grabs
):
    """Whatever the clearing (if valid), the meters and the adversaries' attempts (settling
    twice, refunding before the bids are paid, bidding after the deadline, clearing again):
    each bid gets exactly price × min(delivered, cleared), never more than its cleared cost,
    and escrow in = payments + refund, with nothing left in the contract."""
    with rolled_back(env):
        rid = post(env, min_kw=1.0)  # 1 token escrowed: enough for every clearing of these bids
        first = place(env, rid, price=Decimal("0.1"), kw=8.0, payback_kw=1.0)
        second = place(env, rid, "dave", price=Decimal("0.05"), kw=4.0, payback_kw=1.0, meters=("MD",))
        to_deadline(env, rid)
        clear_call = env.flex.contract.functions.clear(rid, [first_fraction, second_fraction])
        cleared_w = [8000 * first_fraction // 10**6, 4000 * second_fraction // 10**6]
        if sum(cleared_w) < 1000:
            expect_revert("RequirementNotMet", lambda: env.client.transact(clear_call, env["operator"]))
            return
        env.client.transact(clear_call, env["operator"])
        for grab in grabs:
            if grab == "clear_again":
                expect_revert("AlreadyCleared", lambda: env.client.transact(clear_call, env["operator"]))
            elif grab == "bid_late":
                expect_revert("BiddingClosed", lambda: place(env, rid, meters=("MEV",)))
            elif grab == "refund_early":
                expect_revert("BidsNotSettled", lambda: env.flex.refund(env["dso"], rid))
        record_hour(env, env.hour, {m: p for m, p in powers.items() if m not in silent})
        env.travel(env.flex.final_time(env.hour))
        paid = 0
        for bid_id, w, price, meters in (
            (first, cleared_w[0], TOKEN // 10, ("MA", "MB")),
            (second, cleared_w[1], TOKEN // 20, ("MD",)),
        ):
            if w == 0:
                expect_revert("BidNotCleared", lambda b=bid_id: env.flex.settle_bid(env["stranger"], b))
                continue
            settled = env.flex.settle_bid(env["aggregator"], bid_id)
            metered = sum(MISSING_MINUTE_W if m in silent else powers[m] for m in meters)
            delivered = max(0, min(sum(BASELINE_W[m] for m in meters) - metered, w))
            assert units.kw_to_w(settled.delivered_kw) == delivered
            payment = tokens(settled.payment)
            assert payment == price * delivered // 1000 <= price * w // 1000
            paid += payment
            if "settle_again" in grabs:
                expect_revert("BidAlreadySettled", lambda b=bid_id: env.flex.settle_bid(env["aggregator"], b))
        dso = env.wallet("dso")
        refund = tokens(env.flex.refund(env["stranger"], rid))
        assert paid + refund == TOKEN and env.wallet("dso") - dso == refund
        assert env.held() == 0
