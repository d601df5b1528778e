"""Stateful property test: random orders, cancels, band changes, gate closure, readings and
settlements on one slot. After every step:

- tokens are conserved: the market holds exactly the escrow of its open buy orders plus the
  matched but unsettled trades (as its events tell them), and no token appears or vanishes;
- no flexibility's matched schedule is outside its band (after curtailment), and its open
  orders fit conservatively; the order book on chain equals the book built from events;
- no (member, slot) is settled twice.
Admission is predicted from the band: an order is refused with BandExceeded exactly when
the conservative rule says so.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from contracts import units
from contracts.client import ContractRevert
from contracts.market import AssetKind, OrderStatus, Side, TimeInForce
from contracts.orderbook import OrderBookView
from tests.market_setup import (
    DEFAULT_ASSET,
    FLEXIBILITIES,
    MEMBERS,
    METERS,
    PRICE,
    SLOT_MINUTES,
)
from tests.threads import in_fresh_thread

HOUSE_METER = {"alice": "MA", "bob": "MB", "carol": "MPV", "dave": "MD"}
FLEX_IDS = sorted(FLEXIBILITIES)
ORDERS = st.tuples(
    st.sampled_from(MEMBERS),
    st.sampled_from(Side),
    st.integers(1, 1500),  # Wh
    st.integers(1, 8),  # price in quarters of 0.1 token per kWh
    st.sampled_from(TimeInForce),
    st.sampled_from([False, False, False, True]),  # tied to the house meter, not the flexibility
)


def floor_div(a: int, b: int) -> int:
    return a // b


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class MarketMachine(RuleBasedStateMachine):
    def __init__(self, env):
        super().__init__()
        self.env = env
        self.snapshot = env.tester.take_snapshot()
        self.slot = env.open_slot(ahead=3)
        self.phase = "trading"
        self.view = OrderBookView()
        self.decoder = env.community.market
        self.settled: set[str] = set()
        self.bands: dict[str, tuple[int, int]] = {}  # bands change only in change_band
        token = env.community.token.contract.functions
        self.supply = env.client.call(token.totalSupply())
        self.holders = [env[name].address for name in (*MEMBERS, "treasury")]
        self.holders += [env.contract.address, env.settlement.address]

    def teardown(self):
        self.env.tester.revert_to_snapshot(self.snapshot)
        self.env.client.forget_nonces()

    # ---------------------------------------------------------------- helpers

    def transact(self, call, signer):
        receipt = self.env.client.transact(call, signer)
        self.view.apply_all(self.decoder.events_in(receipt))
        return receipt

    def band_wh(self, flex: str) -> tuple[int, int]:
        """(min, max) slot energy in Wh the flexibility's band allows."""
        if flex not in self.bands:
            low, high, _ = self.env.client.call(
                self.env.community.limits.contract.functions.tightestBand(units.encode_id(flex), self.slot)
            )
            self.bands[flex] = (ceil_div(low * SLOT_MINUTES, 60), floor_div(high * SLOT_MINUTES, 60))
        return self.bands[flex]

    def schedule(self, flex: str) -> tuple[int, int, int, int]:
        return tuple(
            self.env.client.call(self.env.contract.functions.schedule(units.encode_id(flex), self.slot))
        )

    def curtail_everything(self):
        """Curtail every flexibility until no call changes anything (a curtailment can push
        the counterparty's flexibility out of its band, so repeat)."""
        changed = True
        while changed:
            changed = False
            for flex in FLEX_IDS:
                call = self.env.contract.functions.curtail(units.encode_id(flex), self.slot)
                curtailed, cancelled, done = self.env.client.call(call)
                if curtailed or cancelled or not done:
                    self.transact(call, self.env["stranger"])
                    changed = True

    # ------------------------------------------------------------------ rules

    @initialize(orders=st.lists(ORDERS, min_size=4, max_size=10))
    def open_the_book(self, orders):
        for order in orders:
            self.place_one(*order)

    @precondition(lambda self: self.phase == "trading")
    @rule(orders=st.lists(ORDERS, min_size=1, max_size=6))
    def place(self, orders):
        for order in orders:
            self.place_one(*order)

    def place_one(self, member, side, quantity, price_step, tif, on_meter):
        if member == "carol" and side == Side.BUY:
            on_meter = True  # a PV never buys (BandExceeded is tested below for the others)
        kind, asset = (AssetKind.METER, HOUSE_METER[member]) if on_meter else DEFAULT_ASSET[member]
        refused = None
        if kind == AssetKind.FLEXIBILITY:
            buy, sell, open_buy, open_sell = self.schedule(asset)
            low, high = self.band_wh(asset)
            net = buy - sell
            if side == Side.BUY and net + open_buy + quantity > high:
                refused = "BandExceeded"
            if side == Side.SELL and net - open_sell - quantity < low:
                refused = "BandExceeded"
        price = price_step * PRICE // 4
        call = self.env.order_call(member, self.slot, side, quantity, price, tif, asset=(kind, asset))
        try:
            self.transact(call, self.env[member])
        except ContractRevert as refusal:
            allowed = {refused} if refused else {"FillOrKillNotFilled", "BookFull"}
            assert refusal.error in allowed, str(refusal)
            return
        assert refused is None, f"order accepted although the band refuses it: {member} {side} {quantity}"

    @precondition(lambda self: self.phase in ("trading", "closed"))
    @rule(data=st.data())
    def cancel(self, data):
        open_orders = [o for o in self.view.orders.values() if o.status == OrderStatus.OPEN]
        if not open_orders:
            return
        order = data.draw(st.sampled_from(sorted(open_orders, key=lambda o: o.order_id)))
        owner = next(name for name in MEMBERS if self.env[name].address == order.owner)
        self.transact(self.env.contract.functions.cancelOrder(order.order_id), self.env[owner])

    @precondition(lambda self: self.phase in ("trading", "closed"))
    @rule(flex=st.sampled_from(FLEX_IDS), low_share=st.floats(0, 0.4), high_share=st.floats(0, 0.5))
    def change_band(self, flex, low_share, high_share):
        _, _, p_low_kw, p_high_kw, _ = FLEXIBILITIES[flex]
        hardware = (units.kw_to_w(p_low_kw), units.kw_to_w(p_high_kw))
        low = round(hardware[0] + (hardware[1] - hardware[0]) * min(low_share, high_share))
        high = round(hardware[0] + (hardware[1] - hardware[0]) * max(low_share, high_share))
        self.env.publish_band(flex, self.slot, low, high)
        self.bands.pop(flex, None)
        self.curtail_everything()

    @precondition(lambda self: self.phase == "trading")
    @rule()
    def close_gate(self):
        self.env.to_gate_closure(self.slot)
        self.phase = "closed"
        while self.view.open_orders(self.slot, Side.BUY) or self.view.open_orders(self.slot, Side.SELL):
            self.transact(self.env.contract.functions.expireOrders(self.slot), self.env["stranger"])

    @precondition(lambda self: self.phase == "closed")
    @rule(powers=st.dictionaries(st.sampled_from(sorted(METERS)), st.integers(-12_000, 12_000), max_size=4))
    def deliver(self, powers):
        self.env.to_final(self.slot)
        self.phase = "delivered"
        for meter, power in powers.items():
            self.env.record_slot(meter, self.slot, power)

    @precondition(lambda self: self.phase == "delivered")
    @rule(names=st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=5))
    def settle(self, names):
        before = [self.env.balance(address) for address in self.holders]
        call = self.env.settlement.functions.settle(self.slot, [self.env[name].address for name in names])
        receipt = self.transact(call, self.env["stranger"])
        settled = [e["member"] for e in self.env.events("MemberSettled", receipt, self.env.settlement)]
        assert len(settled) == len(set(settled))
        assert not self.settled & set(settled), f"settled twice for slot {self.slot}"
        assert set(settled) == {self.env[name].address for name in names} - self.settled
        self.settled |= set(settled)
        if not settled:
            assert before == [self.env.balance(address) for address in self.holders]
        if len(self.settled) == len(MEMBERS):  # on to the next slot
            self.slot = self.env.open_slot(ahead=3)
            self.phase = "trading"
            self.settled = set()
            self.bands = {}

    # ------------------------------------------------------------- invariants

    @invariant()
    def tokens_are_conserved(self):
        balances = [self.env.balance(address) for address in self.holders]
        assert sum(balances) == self.supply
        assert self.env.escrow_held() == self.view.escrow()
        assert self.env.balance(self.env.settlement.address) == 0

    @invariant()
    def schedules_stay_inside_their_bands(self):
        for flex in FLEX_IDS:
            buy, sell, open_buy, open_sell = self.schedule(flex)
            low, high = self.band_wh(flex)
            net = buy - sell
            assert net <= high or buy == 0, f"{flex}: matched {net} Wh above {high}"
            assert net >= low or sell == 0, f"{flex}: matched {net} Wh below {low}"
            assert net + open_buy <= high or open_buy == 0, f"{flex}: open buys beyond the band"
            assert net - open_sell >= low or open_sell == 0, f"{flex}: open sells beyond the band"
            mine = [
                o for o in self.view.orders.values() if o.asset_id == flex and o.status == OrderStatus.OPEN
            ]
            assert open_buy == sum(o.remaining_wh for o in mine if o.side == Side.BUY)
            assert open_sell == sum(o.remaining_wh for o in mine if o.side == Side.SELL)

    @invariant()
    def the_book_on_chain_is_the_book_from_events(self):
        for side in Side:
            on_chain = self.env.client.call(self.env.contract.functions.openOrders(self.slot, int(side)))
            assert list(on_chain) == [o.order_id for o in self.view.open_orders(self.slot, side)]


def test_random_market_sessions_keep_the_invariants(env):
    in_fresh_thread(
        lambda: run_state_machine_as_test(
            lambda: MarketMachine(env),
            settings=settings(
                max_examples=12,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            ),
        )
    )
