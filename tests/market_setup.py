"""A community with a market on an in-process chain; fixtures reset it between tests by snapshots.

Members and assets (load convention, kW):
  alice  battery BAT [-20, 20] (meter MBAT), house meter MA
  bob    EV charger EV [0, 11] (meter MEV), house meter MB
  carol  PV PV [-10, 0] (meter MPV)
  dave   house meter MD only (orders tied to the meter)
Every member holds 1000 tokens and approved the market and the settlement; the treasury
holds 1000 tokens and approved the settlement. Grid prices 0.30 (import) / 0.05 (export)
tokens per kWh from the slot after next on. Slots are 15 min, the gate closes 5 min before a
slot starts, a slot is final 15 min after it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_tester import EthereumTester

from contracts import units
from contracts.accounts import Keyring
from contracts.client import ChainClient, Signer
from contracts.community import Community, Flexibility, FlexKind, Meter, MeterReading, Role
from contracts.deploy import CommunityConfig, deploy_community
from contracts.devchain import fund, start_eth_tester
from contracts.market import MAX_ALLOWANCE, AssetKind, Market, Side, TimeInForce

SLOT_MINUTES = 15
GATE_MINUTES = 5
FINALITY_MINUTES = 15
TOKEN = 10**18
PRICE = TOKEN // 10  # 0.1 token per kWh, in units per kWh
IMPORT_PRICE = 3 * PRICE
EXPORT_PRICE = PRICE // 2

# name -> role held; "stranger" holds none.
ROLE_HOLDERS = {
    "admin": Role.ADMIN,
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
    "alice": Role.MEMBER,
    "bob": Role.MEMBER,
    "carol": Role.MEMBER,
    "dave": Role.MEMBER,
    "stranger": None,
}
MEMBERS = ("alice", "bob", "carol", "dave")
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
    market: Market

    def __getitem__(self, name: str) -> Signer:
        return self.keyring[name]

    @property
    def contract(self):
        return self.market.market

    @property
    def settlement(self):
        return self.market.settlement

    def now(self) -> int:
        """Timestamp of the next block (Unix seconds)."""
        return self.tester.get_block_by_number("pending")["timestamp"]

    def open_slot(self, ahead: int = 8) -> int:
        """A slot ``ahead`` slots after the current one (its gate is open)."""
        return self.now() // 60 // SLOT_MINUTES + ahead

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

    def balance(self, name_or_address: str) -> int:
        address = name_or_address if name_or_address.startswith("0x") else self[name_or_address].address
        return self.client.call(self.community.token.functions.balanceOf(address))

    def escrow_held(self) -> int:
        return self.balance(self.contract.address)

    def publish_band(self, flex: str, slot: int, p_min_w: int, p_max_w: int) -> None:
        start = slot * SLOT_MINUTES
        band = (units.encode_id(flex), start, start + SLOT_MINUTES, p_min_w, p_max_w)
        self.client.transact(self.community.limits.functions.publishBands([band]), self["ocm"])

    def record_slot(self, meter: str, slot: int, power_w: int | list[int]) -> None:
        """Readings of ``meter`` for every minute of ``slot`` (constant or per-minute W)."""
        powers = power_w if isinstance(power_w, list) else [power_w] * SLOT_MINUTES
        start = slot * SLOT_MINUTES
        readings = [
            MeterReading(meter, units.minute_to_unix(start + i), units.w_to_kw(p), 0.0, 1.0, 0.0)
            for i, p in enumerate(powers)
        ]
        self.community.record_readings(self["gateway"], readings)


def deploy_market_community(artifacts, clearing_mode: str = "continuous") -> MarketEnv:
    client, funder, tester = start_eth_tester(artifacts)
    keyring = Keyring.ephemeral()
    for name in (*ROLE_HOLDERS, "treasury"):
        keyring.signer(name)
    fund(client, funder, [keyring[name].address for name in keyring.names])
    admin = keyring["admin"]
    config = CommunityConfig(
        name="market test",
        slot_minutes=SLOT_MINUTES,
        clearing_mode=clearing_mode,
        gate_closure_minutes=GATE_MINUTES,
        finality_delay_minutes=FINALITY_MINUTES,
    )
    deployment = deploy_community(client, admin, config)
    community = Community(client, deployment)
    market = Market(client, deployment)
    calls = []
    for name, role in ROLE_HOLDERS.items():
        if role not in (None, Role.ADMIN, Role.MEMBER):
            calls.append((community.grant_role_call(role, keyring[name].address), admin))
    for name in MEMBERS:
        calls.append((community.add_member_call(keyring[name].address, name), admin))
    client.transact_all(calls, gas=300_000)
    calls = []
    for meter_id, owner in METERS.items():
        meter = Meter(meter_id, 1, keyring[owner].address, keyring[f"meter-{meter_id}"].address)
        calls.append((community.register_meter_call(meter), admin))
    client.transact_all(calls, gas=300_000)
    calls = []
    for flex_id, (owner, kind, low, high, meter_id) in FLEXIBILITIES.items():
        flex = Flexibility(flex_id, keyring[owner].address, 1, kind, low, high, 0, meter_id)
        calls.append((community.register_flexibility_call(flex), admin))
    token = community.token.functions
    for name in (*MEMBERS, "treasury"):
        calls.append((token.mint(keyring[name].address, FUNDED_TOKENS * TOKEN), keyring["operator"]))
        calls.append((token.approve(market.settlement.address, MAX_ALLOWANCE), keyring[name]))
        if name != "treasury":
            calls.append((token.approve(market.market.address, MAX_ALLOWANCE), keyring[name]))
    settlement = market.settlement.functions
    calls.append((settlement.setTreasury(keyring["treasury"].address), keyring["operator"]))
    next_slot = tester.get_block_by_number("pending")["timestamp"] // 60 // SLOT_MINUTES + 2  # margin
    calls.append((settlement.setGridPrices(next_slot, IMPORT_PRICE, EXPORT_PRICE), keyring["operator"]))
    client.transact_all(calls, gas=400_000)
    return MarketEnv(client, tester, keyring, community, market)


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
