"""A community with a market on an in-process chain; fixtures reset it between tests by snapshots.

Members and assets (load convention, kW):
  alice  battery BAT [-20, 20] (meter MBAT), house meter MA
  bob    EV charger EV [0, 11] (meter MEV), house meter MB
  carol  PV PV [-10, 0] (meter MPV)
  dave   house meter MD only (orders tied to the meter)
Every member and the treasury deposited 1000 tokens in the settlement (no allowances
left). Standing terms: 0.30 (import) / 0.05 (export) / 1.00 (penalty) tokens per kWh, a
missing meter minute counts as 20 kW. Slots are 15 min, the gate closes 5 min before a slot
starts, readings of a slot are taken until 15 min after it ends (then it is final).
``open_slot`` publishes OCM bands at the hardware bounds of every flexibility for the slot
(the market is fail-closed: no band, no flexibility order); ``bare_slot`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_tester import EthereumTester
from hypothesis.stateful import RuleBasedStateMachine

from contracts import clock, units
from contracts.accounts import Keyring
from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig
from contracts.ledger import Reading
from contracts.market import AssetKind, Side, TimeInForce
from contracts.orderbook import OrderBookView
from contracts.registry import Flexibility, FlexKind, Meter, Role
from tests.community_setup import SERVICE_ROLES, SETUP_GAS, deploy_on_eth_tester, populate

SLOT_MINUTES = 15
GATE_MINUTES = 5
DATA_DELAY_MINUTES = 15
TOKEN = 10**18
PRICE = TOKEN // 10  # 0.1 token per kWh, in units per kWh
IMPORT_PRICE = 3 * PRICE
EXPORT_PRICE = PRICE // 2
PENALTY_PRICE = 10 * PRICE
MISSING_MINUTE_W = 20_000

# name -> role held; "stranger" holds none.
MEMBERS = ("alice", "bob", "carol", "dave")
ROLE_HOLDERS = {**SERVICE_ROLES, **dict.fromkeys(MEMBERS, Role.MEMBER)}
METERS = {"MA": "alice", "MBAT": "alice", "MB": "bob", "MEV": "bob", "MPV": "carol", "MD": "dave"}
FLEXIBILITIES = {
    "BAT": ("alice", FlexKind.BATTERY, -20.0, 20.0, "MBAT"),
    "EV": ("bob", FlexKind.EV_CHARGER, 0.0, 11.0, "MEV"),
    "PV": ("carol", FlexKind.PV, -10.0, 0.0, "MPV"),
}
# the asset each member's orders are tied to by default: (kind, id)
DEFAULT_ASSET = {
    "alice": (AssetKind.FLEXIBILITY, "BAT"),
    "bob": (AssetKind.FLEXIBILITY, "EV"),
    "carol": (AssetKind.FLEXIBILITY, "PV"),
    "dave": (AssetKind.METER, "MD"),
}
FUNDED_TOKENS = 1000


@dataclass
class MarketEnv:
    client: ChainClient
    tester: EthereumTester
    keyring: Keyring
    community: Community

    def __getitem__(self, name: str) -> Signer:
        return self.keyring[name]

    @property
    def market(self) -> Community:
        """The community (tests call ``env.market.market.…`` and ``env.market.settlement.…``)."""
        return self.community

    @property
    def contract(self):
        """The raw web3 ``EnergyMarket`` contract."""
        return self.community.market.contract

    @property
    def settlement(self):
        """The raw web3 ``Settlement`` contract."""
        return self.community.settlement.contract

    def now(self) -> int:
        """Timestamp of the next block (Unix seconds)."""
        return self.tester.get_block_by_number("pending")["timestamp"]

    def bare_slot(self, ahead: int = 8) -> int:
        """A slot ``ahead`` slots after the current one (its gate is open), no band published."""
        return self.now() // 60 // SLOT_MINUTES + ahead

    def open_slot(self, ahead: int = 8) -> int:
        """A slot ``ahead`` slots after the current one (its gate is open), with OCM bands at
        the hardware bounds of every flexibility published for it."""
        slot = self.bare_slot(ahead)
        self.publish_hardware_bands(slot)
        return slot

    def publish_hardware_bands(self, slot: int) -> None:
        """OCM bands at the hardware bounds of every flexibility for ``slot``."""
        for flex, (_, _, low, high, _) in FLEXIBILITIES.items():
            self.publish_band(flex, slot, units.kw_to_w(low), units.kw_to_w(high))

    def travel(self, timestamp: int) -> None:
        """Make the next block have ``timestamp`` (if it is later than now)."""
        if timestamp > self.now():
            self.tester.time_travel(timestamp)

    def to_gate_closure(self, slot: int) -> None:
        self.travel(self.client.call(self.contract.functions.gateClosureTime(slot)))

    def to_final(self, slot: int) -> None:
        self.travel(self.client.call(self.settlement.functions.finalTime(slot)))

    def order_call(
        self,
        member: str,
        slot: int,
        side: Side,
        quantity_wh: int,
        price: int,
        tif: TimeInForce = TimeInForce.GOOD_TILL_CANCELLED,
        asset: tuple[AssetKind, str] | None = None,
        hint: int = 0,
    ):
        kind, asset_id = asset or DEFAULT_ASSET[member]
        request = (slot, int(side), int(tif), int(kind), units.encode_id(asset_id), quantity_wh, price)
        return self.contract.functions.placeOrder(request, hint)

    def place(self, member: str, *args, **kwargs) -> tuple[int, dict]:
        """Place an order (raw chain units); returns (order id, receipt)."""
        receipt = self.client.transact(self.order_call(member, *args, **kwargs), self[member])
        return self.client.events(self.contract, "OrderPlaced", receipt)[0]["orderId"], receipt

    def order(self, order_id: int):
        return self.client.call(self.contract.functions.order(order_id))

    def events(self, name: str, receipt, contract=None) -> list[dict]:
        return self.client.events(contract or self.contract, name, receipt)

    def address(self, name_or_address: str) -> str:
        return name_or_address if name_or_address.startswith("0x") else self[name_or_address].address

    def wallet(self, name_or_address: str) -> int:
        """Token units in the account's wallet (outside the settlement)."""
        return self.client.call(
            self.community.token.contract.functions.balanceOf(self.address(name_or_address))
        )

    def deposit(self, name_or_address: str) -> tuple[int, int]:
        """(free, locked) token units of the account's deposit."""
        return tuple(self.client.call(self.settlement.functions.accountOf(self.address(name_or_address))))

    def balance(self, name_or_address: str) -> int:
        """Token units the account can dispose of: its wallet plus its free deposit."""
        return self.wallet(name_or_address) + self.deposit(name_or_address)[0]

    def escrow_held(self) -> int:
        """Token units the market holds locked in all deposits."""
        return sum(self.deposit(name)[1] for name in (*MEMBERS, "treasury"))

    def publish_band(self, flex: str, slot: int, p_min_w: int, p_max_w: int) -> None:
        start = slot * SLOT_MINUTES
        band = (units.encode_id(flex), start, start + SLOT_MINUTES, p_min_w, p_max_w)
        self.client.transact(self.community.limits.contract.functions.publishBands([band]), self["ocm"])

    def record_slot(self, meter: str, slot: int, power_w: int | list[int]) -> None:
        """Readings of ``meter`` for every minute of ``slot`` (constant or per-minute W)."""
        powers = power_w if isinstance(power_w, list) else [power_w] * SLOT_MINUTES
        start = slot * SLOT_MINUTES
        readings = [
            Reading(meter, clock.minute_start(start + i), units.w_to_kw(p), 0.0, 1.0, 0.0)
            for i, p in enumerate(powers)
        ]
        self.community.ledger.record_readings(self["gateway"], readings)


def deploy_market_community(artifacts, clearing_mode: str = "continuous") -> MarketEnv:
    config = CommunityConfig(
        name="market test",
        slot_minutes=SLOT_MINUTES,
        clearing_mode=clearing_mode,
        gate_closure_minutes=GATE_MINUTES,
        data_delay_minutes=DATA_DELAY_MINUTES,
        import_price=str(units.units_per_kwh_to_price(IMPORT_PRICE)),
        export_price=str(units.units_per_kwh_to_price(EXPORT_PRICE)),
        penalty_price=str(units.units_per_kwh_to_price(PENALTY_PRICE)),
        missing_minute_kw=units.w_to_kw(MISSING_MINUTE_W),
    )
    client, tester, keyring, community = deploy_on_eth_tester(
        artifacts, config, (*MEMBERS, "treasury"), treasury="treasury"
    )
    populate(
        community,
        keyring,
        ROLE_HOLDERS,
        MEMBERS,
        [Meter(m, 1, keyring[owner].address, keyring[f"meter-{m}"].address) for m, owner in METERS.items()],
        [
            Flexibility(flex_id, keyring[owner].address, 1, kind, low, high, 0, meter_id)
            for flex_id, (owner, kind, low, high, meter_id) in FLEXIBILITIES.items()
        ],
    )
    token, settlement, operator = community.token, community.settlement, keyring["operator"]
    calls = []
    for name in (*MEMBERS, "treasury"):
        calls.append((token.mint_call(keyring[name].address, FUNDED_TOKENS), operator))
        calls.append((token.approve_call(settlement.address, FUNDED_TOKENS), keyring[name]))
        calls.append((settlement.deposit_call(FUNDED_TOKENS), keyring[name]))
    client.transact_all(calls, gas=SETUP_GAS)
    return MarketEnv(client, tester, keyring, community)


@pytest.fixture(scope="session")
def market_chain(artifacts) -> MarketEnv:
    return deploy_market_community(artifacts)


@pytest.fixture
def env(market_chain: MarketEnv):
    """The community with its market, rolled back to its initial state after the test."""
    snapshot = market_chain.tester.take_snapshot()
    yield market_chain
    market_chain.tester.revert_to_snapshot(snapshot)
    market_chain.client.forget_nonces()


class MarketSessionMachine(RuleBasedStateMachine):
    """A hypothesis state machine on the shared market chain: it starts from a snapshot
    with a slot open three slots ahead, reverts to the snapshot at the end, and keeps an
    order book built from the market events of its own transactions."""

    def __init__(self, env: MarketEnv):
        super().__init__()
        self.env = env
        self.snapshot = env.tester.take_snapshot()
        self.view = OrderBookView()
        self.slot = env.open_slot(ahead=3)

    def teardown(self):
        self.env.tester.revert_to_snapshot(self.snapshot)
        self.env.client.forget_nonces()

    def transact(self, call, signer):
        receipt = self.env.client.transact(call, signer)
        self.view.apply_all(self.env.community.market.events_in(receipt))
        return receipt
