"""Gas and throughput of the energy market and the settlement.

Prints gas (deterministic, measured on the in-process eth-tester chain) for:
  - an order that rests (sell / buy with escrow; tied to a meter or, with the band check,
    to a flexibility; inserted with and without a position hint into a book of 40),
  - an order matching 1 and N resting orders, and the gas per extra match,
  - a cancel, an expiry, a curtailed trade, an auction clearing (per trade),
  - a settlement (per member, with and without a flexibility, in batches),
and orders per second on the embedded proof-of-authority node (in process, 2 s blocks):
members send orders pipelined (local nonces, fixed gas, no estimate) that alternately
rest and match one resting order, tied to meters or to flexibilities.

usage: .venv/bin/python benchmarks/market_gas.py [--seconds 30] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import statistics
import time

from contracts import clock, units
from contracts.accounts import Keyring
from contracts.build import build_contracts
from contracts.client import ChainClient
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.devchain import fund, start_eth_tester
from contracts.ledger import Reading
from contracts.market import AssetKind, Side, TimeInForce
from contracts.registry import Flexibility, FlexKind, Meter, Role
from contracts.token import MAX_ALLOWANCE
from node.embedded import open_embedded_chain

SLOT_MINUTES = 15
TOKEN = 10**18
PRICE = TOKEN // 10  # 0.1 token per kWh
MEMBERS = 8
ORDER_GAS = 900_000
BUY, SELL = Side.BUY, Side.SELL
GTC, IOC = TimeInForce.GOOD_TILL_CANCELLED, TimeInForce.IMMEDIATE_OR_CANCEL


class Bench:
    """A community with ``MEMBERS`` members, each with a house meter ``H<i>`` and a
    battery ``B<i>`` (±50 kW, metered by ``F<i>``), tokens minted and approved."""

    def __init__(self, client: ChainClient, keyring: Keyring, tester=None):
        self.client = client
        self.keyring = keyring
        self.tester = tester  # eth-tester (time travel), None on the embedded node
        admin = keyring["admin"]
        config = CommunityConfig(slot_minutes=SLOT_MINUTES, gate_closure_minutes=5, finality_delay_minutes=15)
        deployment = deploy_community(client, admin, config)
        self.community = Community(client, deployment)
        self.names = [f"m{i}" for i in range(MEMBERS)]
        calls = [
            (self.community.registry.grant_role_call(role, keyring[name].address), admin)
            for name, role in (
                ("operator", Role.MARKET_OPERATOR),
                ("gateway", Role.GATEWAY),
                ("ocm", Role.OCM_ORACLE),
            )
        ]
        calls += [(self.community.registry.add_member_call(keyring[n].address, n), admin) for n in self.names]
        client.transact_all(calls, gas=300_000)
        calls = []
        for i, name in enumerate(self.names):
            address = keyring[name].address
            for meter in (f"H{i}", f"F{i}"):
                calls.append(
                    (self.community.registry.register_meter_call(Meter(meter, i, address, address)), admin)
                )
        client.transact_all(calls, gas=300_000)
        calls = [
            (
                self.community.registry.register_flexibility_call(
                    Flexibility(
                        f"B{i}", self.keyring[name].address, i, FlexKind.BATTERY, -50.0, 50.0, 0, f"F{i}"
                    )
                ),
                admin,
            )
            for i, name in enumerate(self.names)
        ]
        token = self.community.token.contract.functions
        operator = keyring["operator"]
        for name in (*self.names, "treasury"):
            signer = keyring[name]
            calls.append((token.mint(signer.address, 10**6 * TOKEN), operator))
            calls.append((token.approve(self.community.settlement.address, MAX_ALLOWANCE), signer))
            calls.append((token.approve(self.community.market.address, MAX_ALLOWANCE), signer))
        settlement = self.community.settlement.contract.functions
        calls.append((settlement.setTreasury(keyring["treasury"].address), operator))
        calls.append(
            (settlement.setGridPrices(self.now() // 60 // SLOT_MINUTES + 2, 3 * PRICE, PRICE // 2), operator)
        )
        client.transact_all(calls, gas=400_000)

    def now(self) -> int:
        return self.client.w3.eth.get_block("latest")["timestamp"]

    def travel(self, timestamp: int) -> None:
        if timestamp > self.tester.get_block_by_number("pending")["timestamp"]:
            self.tester.time_travel(timestamp)

    def open_slot(self, ahead: int = 8) -> int:
        return self.now() // 60 // SLOT_MINUTES + ahead

    def order(self, member: int, slot: int, side: Side, wh: int, price: int, tif=GTC, flex=False, hint=0):
        kind, asset = (AssetKind.FLEXIBILITY, f"B{member}") if flex else (AssetKind.METER, f"H{member}")
        request = (slot, int(side), int(tif), int(kind), units.encode_id(asset), wh, price)
        return self.community.market.contract.functions.placeOrder(request, hint), self.keyring[
            self.names[member]
        ]

    def gas(self, call_and_signer) -> int:
        call, signer = call_and_signer
        return self.client.transact(call, signer)["gasUsed"]

    def fill(self, slot: int, side: Side, count: int, price=PRICE, wh=10, flex=False, first_member=1) -> None:
        """``count`` resting orders (members round robin from ``first_member``), one block."""
        calls = [
            self.order((first_member + i) % MEMBERS, slot, side, wh, price, flex=flex) for i in range(count)
        ]
        self.client.transact_all(calls, gas=ORDER_GAS)


def gas_figures(bench: Bench) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    slot = bench.open_slot()

    def fresh() -> int:
        nonlocal slot
        slot += 1
        return slot

    # resting orders
    s = fresh()
    rows.append(("rest: sell, meter, empty book", bench.gas(bench.order(0, s, SELL, 1000, 2 * PRICE))))
    rows.append(
        ("rest: sell, meter, 2nd order of the side", bench.gas(bench.order(1, s, SELL, 1000, 3 * PRICE)))
    )
    rows.append(("rest: buy, meter (escrow)", bench.gas(bench.order(0, s, BUY, 1000, PRICE))))
    rows.append(
        ("rest: buy, flexibility (escrow + band)", bench.gas(bench.order(2, s, BUY, 1000, PRICE, flex=True)))
    )
    rows.append(
        ("rest: sell, flexibility (band)", bench.gas(bench.order(3, s, SELL, 1000, 4 * PRICE, flex=True)))
    )
    s = fresh()
    bench.fill(s, SELL, 40, price=PRICE)
    rows.append(("rest: behind 40 orders, no hint", bench.gas(bench.order(0, s, SELL, 10, 2 * PRICE))))
    hint = bench.client.call(bench.community.market.contract.functions.insertionHint(s, int(SELL), 2 * PRICE))
    rows.append(
        ("rest: behind 40 orders, with hint", bench.gas(bench.order(0, s, SELL, 10, 2 * PRICE, hint=hint)))
    )

    # matching
    for flex in (False, True):
        label = "flexibility orders" if flex else "meter orders"
        per_n = {}
        for n in (1, 2, 4, 8, 16):
            s = fresh()
            bench.fill(s, SELL, n, flex=flex)
            per_n[n] = bench.gas(bench.order(0, s, BUY, 10 * n, PRICE, IOC, flex=flex))
        rows.append((f"match 1 ({label})", per_n[1]))
        for n in (4, 16):
            rows.append((f"match {n} ({label})", per_n[n]))
        rows.append((f"  per extra match ({label})", (per_n[16] - per_n[1]) / 15))

    # cancel, expiry
    s = fresh()
    call, signer = bench.order(1, s, BUY, 1000, PRICE)
    order_id = bench.client.events(
        bench.community.market.contract, "OrderPlaced", bench.client.transact(call, signer)
    )[0]["orderId"]
    rows.append(
        (
            "cancel (buy, refund)",
            bench.gas((bench.community.market.contract.functions.cancelOrder(order_id), signer)),
        )
    )
    s = fresh()
    bench.fill(s, BUY, 32, price=PRICE)
    gate = bench.client.call(bench.community.market.contract.functions.gateClosureTime(s))
    expire_slot = s

    # curtailment: 16 trades of battery B0 (buys), then its band drops to 0
    s = fresh()
    bench.fill(s, SELL, 16, wh=100, flex=False, first_member=1)
    for _ in range(16):
        bench.gas(bench.order(0, s, BUY, 100, PRICE, IOC, flex=True))
    start = s * SLOT_MINUTES
    bench.client.transact(
        bench.community.limits.contract.functions.publishBands(
            [(units.encode_id("B0"), start, start + 15, -50_000, 0)]
        ),
        bench.keyring["ocm"],
    )
    receipt = bench.client.transact(
        bench.community.market.contract.functions.curtail(units.encode_id("B0"), s), bench.keyring["admin"]
    )
    curtailed = len(bench.client.events(bench.community.market.contract, "TradeCurtailed", receipt))
    rows.append((f"curtail: per trade ({curtailed} trades)", receipt["gasUsed"] / curtailed))

    # expiry (after the gate of the expiry slot closed)
    bench.travel(gate)
    receipt = bench.client.transact(
        bench.community.market.contract.functions.expireOrders(expire_slot), bench.keyring["admin"]
    )
    expired = len(bench.client.events(bench.community.market.contract, "OrderClosed", receipt))
    rows.append((f"expire: per order ({expired} orders)", receipt["gasUsed"] / expired))
    return rows


def auction_figures(artifacts) -> list[tuple[str, float]]:
    rows = []
    for n in (10, 25, 50):
        bench = tester_bench(artifacts)
        bench.client.transact(
            bench.community.market.contract.functions.setClearingMode(1), bench.keyring["operator"]
        )
        s = bench.open_slot()
        calls = []
        for i in range(n):  # bids 2.0 .. 1.51, asks 1.0 .. 1.49: every order trades
            calls.append(bench.order(i % MEMBERS, s, BUY, 100, 2 * PRICE - i * PRICE // 100))
            calls.append(bench.order((i + 1) % MEMBERS, s, SELL, 100, PRICE + i * PRICE // 100))
        bench.client.transact_all(calls, gas=ORDER_GAS)
        bench.travel(bench.client.call(bench.community.market.contract.functions.gateClosureTime(s)))
        receipt = bench.client.transact(
            bench.community.market.contract.functions.clearAuction(s), bench.keyring["admin"]
        )
        trades = len(bench.client.events(bench.community.market.contract, "TradeExecuted", receipt))
        rows.append((f"auction: {n} bids + {n} asks, {trades} trades", receipt["gasUsed"]))
        rows.append(("  per trade", receipt["gasUsed"] / trades))
    return rows


def settlement_figures(bench: Bench) -> list[tuple[str, float]]:
    rows = []
    s = bench.open_slot(ahead=3)
    for i in range(MEMBERS):  # every member: one trade and readings on both meters
        bench.gas(bench.order(i, s, SELL, 500, PRICE))
        bench.gas(bench.order((i + 1) % MEMBERS, s, BUY, 500, PRICE, flex=True))
    bench.travel(bench.client.call(bench.community.settlement.contract.functions.finalTime(s)))
    readings = [
        Reading(f"{kind}{i}", clock.minute_start(s * SLOT_MINUTES + m), 1.5, 0.0, 1.0, 0.0)
        for i in range(MEMBERS)
        for kind in ("H", "F")
        for m in range(SLOT_MINUTES)
    ]
    for chunk in range(0, len(readings), 60):
        bench.community.ledger.record_readings(bench.keyring["gateway"], readings[chunk : chunk + 60])
    settle = bench.community.settlement.contract.functions.settle
    address = [bench.keyring[name].address for name in bench.names]
    admin = bench.keyring["admin"]
    first = bench.client.transact(settle(s, address[:1]), admin)["gasUsed"]
    rows.append(("settle 1 member, first call (indexes 16 meters, 8 flexibilities)", first))
    one = bench.client.transact(settle(s, address[1:2]), admin)["gasUsed"]
    rows.append(("settle 1 member (2 meters, 1 flexibility, proceeds)", one))
    batch = bench.client.transact(settle(s, address[2:8]), admin)["gasUsed"]
    rows.append(("settle 6 members in one call: per member", batch / 6))
    again = bench.client.transact(settle(s, address), admin)["gasUsed"]
    rows.append(("settle again (all already settled)", again))
    return rows


def throughput(artifacts, seconds: float) -> list[tuple[str, float, int]]:
    """Orders per second on the embedded node, pipelined from every member."""
    keyring = Keyring.ephemeral()
    for name in ("operator", "gateway", "ocm", "treasury", *(f"m{i}" for i in range(MEMBERS))):
        keyring.signer(name)
    chain = open_embedded_chain(None, period=2, keyring=keyring)
    results = []
    try:
        client = chain.client(artifacts)
        bench = Bench(client, keyring)
        for flex in (False, True):
            count = max(2 * MEMBERS, int(seconds * 60)) // (2 * MEMBERS) * (2 * MEMBERS)
            base = bench.open_slot()
            fees_calls = []
            for i in range(count):
                pair = i // 2
                side = SELL if i % 2 == 0 else BUY
                member = (pair + (i % 2) * 3) % MEMBERS  # seller and buyer differ
                slot = base + pair % 20  # spread over 20 slots: books stay short
                fees_calls.append(bench.order(member, slot, side, 100, PRICE, flex=flex))
            started = time.perf_counter()
            hashes = [client.send(call, signer, gas=ORDER_GAS) for call, signer in fees_calls]
            sent = time.perf_counter() - started
            receipts = [client.wait(tx_hash) for tx_hash in hashes]
            elapsed = time.perf_counter() - started
            trades = sum(
                len(client.events(bench.community.market.contract, "TradeExecuted", r)) for r in receipts
            )
            gas = statistics.mean(r["gasUsed"] for r in receipts)
            label = "flexibilities (band checks)" if flex else "meters"
            results.append(
                (f"{count} orders on {label}: {trades} trades, mean gas {gas:,.0f}", count / elapsed, count)
            )
            results.append((f"  (sending alone: {count / sent:.1f} orders/s)", count / sent, count))
    finally:
        chain.stop()
    return results


def tester_bench(artifacts) -> Bench:
    """A fresh community on a fresh in-process eth-tester chain."""
    client, funder, tester = start_eth_tester(artifacts)
    keyring = Keyring.ephemeral()
    for name in ("operator", "gateway", "ocm", "treasury", *(f"m{i}" for i in range(MEMBERS))):
        keyring.signer(name)
    fund(client, funder, [keyring[name].address for name in keyring.names])
    return Bench(client, keyring, tester)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="approximate length of each throughput run")
    parser.add_argument("--skip-throughput", action="store_true", help="gas figures only")
    args = parser.parse_args()
    artifacts = build_contracts().artifacts
    sizes = {name: len(artifacts[name].deployed_bytecode) // 2 for name in ("EnergyMarket", "Settlement")}
    print("Code size (limit 24,576 bytes): " + ", ".join(f"{n} {b:,} bytes" for n, b in sizes.items()))
    print()
    print("Gas (in-process eth-tester chain; gas does not depend on the machine)")
    bench = tester_bench(artifacts)
    for label, gas in (
        gas_figures(bench) + auction_figures(artifacts) + settlement_figures(tester_bench(artifacts))
    ):
        print(f"  {label:<66} {gas:>12,.0f}")
    if args.skip_throughput:
        return
    print()
    print("Throughput (embedded PoA node in process, 2 s blocks, pipelined sends, fixed gas)")
    for label, rate, _ in throughput(artifacts, args.seconds):
        print(f"  {label:<72} {rate:>8.1f} orders/s")


if __name__ == "__main__":
    main()
