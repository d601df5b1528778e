"""Stateful property test with adversarial actors: the five guarantees of docs/market.md hold
after every step, whatever honest members, colluders, spammers, self-traders, silent meters
and a market operator changing settings mid-slot do.

Actors (the community of ``tests.market_setup``):
- honest trades by any member, on any of its assets;
- a colluding pair (alice sells large quantities through her house meter, dave buys them;
  neither meter delivers or uses them);
- a spammer (dave) flooding the slot with minimal orders;
- a self-trader crossing its own orders, and members ordering through a flexibility's meter;
- meters that go silent for a delivered slot;
- the DSO tightening bands before gate closure;
- the market operator pausing, changing gate closure and trying to change terms and the
  treasury mid-slot.

Invariants after every step: every token of the settlement contract is in some deposit; the
locks equal what open orders and unsettled trades need (as the events tell); no member holds
more than 8 open orders in the slot; no finalized flexibility schedule is outside its band;
after each settlement the treasury paid export credit only for metered injection, no seller
ran into debt for energy it sold (its collateral covered it), and nobody was settled twice.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from contracts import units
from contracts.client import ContractRevert
from contracts.market import AssetKind, Side, TimeInForce
from contracts.settlement import Terms
from tests.market_setup import (
    EXPORT_PRICE,
    FLEXIBILITIES,
    IMPORT_PRICE,
    MEMBERS,
    METERS,
    PRICE,
    SLOT_MINUTES,
    MarketSessionMachine,
)
from tests.threads import in_fresh_thread

ASSETS = {
    "alice": [(AssetKind.METER, "MA"), (AssetKind.FLEXIBILITY, "BAT")],
    "bob": [(AssetKind.METER, "MB"), (AssetKind.FLEXIBILITY, "EV")],
    "carol": [(AssetKind.FLEXIBILITY, "PV")],
    "dave": [(AssetKind.METER, "MD")],
}
FLEX_METERS = {meter for (_, _, _, _, meter) in FLEXIBILITIES.values()}
# refusals an honest or adversarial order may legitimately meet
EXPECTED_REFUSALS = {
    "BandExceeded",
    "SelfTrade",
    "TooManyOpenOrders",
    "InsufficientDeposit",
    "FillOrKillNotFilled",
    "TooManyAllOrNone",
    "BookFull",
    "MarketPaused",
    "MeterMeasuresFlexibility",
}
PRICES = st.integers(1, 40).map(lambda quarter: quarter * PRICE // 4)


class AdversarialMarket(MarketSessionMachine):
    def __init__(self, env):
        super().__init__(env)
        self.market = env.community.market
        self.settlement = env.community.settlement
        self.accounts = [env[name].address for name in (*MEMBERS, "treasury")]
        self.settled_pairs: set[tuple[str, int]] = set()

    # ---------------------------------------------------------------- helpers

    def place(self, member, side, quantity_wh, price, tif=TimeInForce.GOOD_TILL_CANCELLED, asset=None):
        """Place an order; a refusal must be one of the expected, named ones."""
        try:
            _, receipt = self.env.place(member, self.slot, side, quantity_wh, price, tif, asset=asset)
        except ContractRevert as refusal:
            assert refusal.error in EXPECTED_REFUSALS, str(refusal)
            return refusal.error
        self.view.apply_all(self.market.events_in(receipt))
        return None

    # ------------------------------------------------------------------ rules

    @rule(
        member=st.sampled_from(MEMBERS),
        side=st.sampled_from(Side),
        quantity_wh=st.integers(10, 3000),
        price=PRICES,
        tif=st.sampled_from(TimeInForce),
        pick=st.integers(0, 1),
    )
    def honest_order(self, member, side, quantity_wh, price, tif, pick):
        assets = ASSETS[member]
        self.place(member, side, quantity_wh, price, tif, asset=assets[pick % len(assets)])

    @rule(quantity_wh=st.integers(1_000, 200_000), price=PRICES)
    def colluders_trade_energy_that_never_flows(self, quantity_wh, price):
        if self.place("alice", Side.SELL, quantity_wh, price, asset=(AssetKind.METER, "MA")) is None:
            self.place("dave", Side.BUY, quantity_wh, price, asset=(AssetKind.METER, "MD"))

    @rule(count=st.integers(1, 12))
    def spammer_floods_the_slot(self, count):
        for i in range(count):
            refusal = self.place(
                "dave", Side.SELL, 10, 9 * PRICE + i * PRICE // 100, asset=(AssetKind.METER, "MD")
            )
            if refusal == "TooManyOpenOrders":
                break

    @rule(member=st.sampled_from(["alice", "bob"]), price=PRICES)
    def self_trader_crosses_its_own_order(self, member, price):
        meter = ASSETS[member][0]
        if self.place(member, Side.SELL, 500, price, asset=meter) is not None:
            return
        resting = [
            o for o in self.view.open_orders(self.slot, Side.SELL) if o.owner == self.env[member].address
        ]
        if any(o.limit_price <= price for o in resting):  # its ask rests (not filled at once): refused
            assert self.place(member, Side.BUY, 500, price, asset=meter) in ("SelfTrade", "TooManyOpenOrders")

    @rule(meter=st.sampled_from(sorted(FLEX_METERS)))
    def order_through_a_flexibilitys_meter(self, meter):
        owner = METERS[meter]
        assert self.place(owner, Side.BUY, 100, PRICE, asset=(AssetKind.METER, meter)) in (
            "MeterMeasuresFlexibility",
            "MarketPaused",
            "TooManyOpenOrders",
        )

    @rule(flex=st.sampled_from(sorted(FLEXIBILITIES)), share=st.floats(0.0, 1.0))
    def dso_tightens_a_band(self, flex, share):
        _, _, low, high, _ = FLEXIBILITIES[flex]
        low_w, high_w = units.kw_to_w(low), units.kw_to_w(high)
        new_high = max(low_w, round(high_w - (high_w - max(low_w, 0)) * share))
        self.env.publish_band(flex, self.slot, low_w, new_high)

    @rule(paused=st.booleans(), gate=st.integers(1, 10))
    def operator_changes_settings_mid_slot(self, paused, gate):
        operator = self.env["operator"]
        self.market.set_paused(operator, paused)
        self.market.set_gate_closure(operator, gate * 60)
        terms = Terms(units.units_per_kwh_to_price(IMPORT_PRICE * 10), units.units_per_kwh_to_price(0), 0, 0)
        try:  # the slot being traded cannot get new prices
            self.settlement.set_terms(operator, self.slot, terms)
            raise AssertionError("terms changed for a slot being traded")
        except ContractRevert as refusal:
            assert refusal.error == "NoticeTooShort"
        try:  # and the operator cannot move the treasury at all
            self.settlement.set_treasury(operator, operator.address, self.slot + 10**4)
            raise AssertionError("the operator moved the treasury")
        except ContractRevert as refusal:
            assert refusal.error == "AccessControlUnauthorizedAccount"

    @rule(
        silent=st.sets(st.sampled_from(sorted(METERS))),
        powers=st.lists(st.integers(-8000, 8000), min_size=6, max_size=6),
    )
    def deliver_and_settle(self, silent, powers):
        env, operator, slot = self.env, self.env["operator"], self.slot
        self.market.set_paused(operator, False)
        env.to_gate_closure(slot)
        market = env.contract.functions
        while True:  # continuous mode: open orders expire at gate closure
            expired = self.market.events_in(self.transact(market.expireOrders(slot), operator))
            if not expired:
                break
        while True:
            finalized = self.market.events_in(self.transact(market.finalizeSlot(slot), operator))
            if any(event.name == "SlotFinalized" for event in finalized):
                break
        self.check_finalized_bands()
        env.travel((slot + 1) * SLOT_MINUTES * 60)
        for meter, power in zip(sorted(METERS), powers, strict=True):
            if meter not in silent:
                env.record_slot(meter, slot, power)
        env.to_final(slot)
        positions = {name: self.market.position(env[name].address, slot) for name in MEMBERS}
        debts = {name: self.settlement.debt_of(env[name].address) for name in MEMBERS}
        frees = {name: self.settlement.deposit_of(env[name].address).free for name in MEMBERS}
        result = self.settlement.settle(operator, slot, [env[name].address for name in MEMBERS])
        self.view.apply_all(self.market.events_in(result.receipt))
        self.check_settlement(slot, result, positions, debts, frees)
        self.slot = env.open_slot(ahead=3)

    # ------------------------------------------------------------- checks

    def check_finalized_bands(self):
        for flex in FLEXIBILITIES:
            buy, sell, _, _ = self.env.client.call(
                self.env.contract.functions.schedule(units.encode_id(flex), self.slot)
            )
            band = self.env.community.limits.tightest_band(flex, self.slot)
            low_wh = -(-units.kw_to_w(band.p_min_kw) * SLOT_MINUTES // 60)
            high_wh = units.kw_to_w(band.p_max_kw) * SLOT_MINUTES // 60
            net = buy - sell
            assert net <= high_wh or buy == 0, f"{flex}: final schedule {net} Wh above {high_wh}"
            assert net >= low_wh or sell == 0, f"{flex}: final schedule {net} Wh below {low_wh}"

    def check_settlement(self, slot, result, positions, debts, frees):
        assert len(result.members) == len(MEMBERS)
        for settled in result.members:
            pair = (settled.member, slot)
            assert pair not in self.settled_pairs, "settled twice"
            self.settled_pairs.add(pair)
        credited_units = 0
        for name in MEMBERS:
            settled = next(s for s in result.members if s.member == self.env[name].address)
            metered_wmin = round(settled.metered_kwh * 60_000)
            injection_wmin = max(0, -metered_wmin)
            credit_units = units.tokens_to_units(settled.credit)
            # guarantee 1: export credit only for metered injection
            assert credit_units <= injection_wmin * EXPORT_PRICE // 60_000
            credited_units += credit_units
            # guarantee 1: a seller's collateral covers what its sales can cost
            position = positions[name]
            sold_wh = round(position.sold_kwh * 1000)
            assert units.tokens_to_units(position.collateral) >= sold_wh * IMPORT_PRICE // 1000 - 1
            new_debt = self.settlement.debt_of(self.env[name].address) - debts[name]
            available = frees[name] + position.collateral + position.proceeds
            assert new_debt <= max(0, settled.charge + settled.penalty - available)
        charged, credited = self.settlement.slot_flows(slot)
        assert units.tokens_to_units(credited) == credited_units
        charges = sum(s.charge + s.penalty for s in result.members)
        assert charged == charges

    # ------------------------------------------------------------- invariants

    @invariant()
    def every_token_of_the_settlement_is_in_a_deposit(self):
        token = self.env.community.token.contract.functions
        held = self.env.client.call(token.balanceOf(self.env.settlement.address))
        deposits = [self.env.deposit(address) for address in self.accounts]
        assert held == sum(free + locked for free, locked in deposits)

    @invariant()
    def locks_are_what_orders_and_open_trades_need(self):
        locked = sum(self.env.deposit(address)[1] for address in self.accounts)
        assert locked == self.view.locked()

    @invariant()
    def no_member_holds_more_than_eight_open_orders(self):
        for name in MEMBERS:
            mine = [
                o
                for o in self.view.open_orders(self.slot, Side.BUY)
                + self.view.open_orders(self.slot, Side.SELL)
                if o.owner == self.env[name].address
            ]
            assert len(mine) <= 8


def test_adversaries_cannot_break_the_guarantees(env):
    in_fresh_thread(
        lambda: run_state_machine_as_test(
            lambda: AdversarialMarket(env),
            settings=settings(
                max_examples=6,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            ),
        )
    )
