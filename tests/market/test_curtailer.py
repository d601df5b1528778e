"""The curtailer on a running embedded chain: a band tightened after a match leads to a
curtailment and a refund in the next block or so, with no call by hand."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from contracts import units
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.limits import Band
from contracts.market import AssetKind, OrderRequest, Side
from contracts.registry import Flexibility, FlexKind, Meter, Role
from market.curtailer import Curtailer
from node.embedded import open_embedded_chain
from tests.community_setup import populate

BLOCK_PERIOD_S = 1


@pytest.fixture
def market_on_a_running_chain(artifacts):
    chain = open_embedded_chain(None, period=BLOCK_PERIOD_S)
    try:
        client, keyring = chain.client(artifacts), chain.keyring
        community = Community(client, deploy_community(client, keyring["admin"], CommunityConfig()))
        for name in ("alice", "bob"):
            client.transfer_ether(keyring["faucet"], keyring[name].address, 10**18)
        alice, bob = keyring["alice"].address, keyring["bob"].address
        populate(
            community,
            keyring,
            {"ocm": Role.OCM_ORACLE, "operator": Role.MARKET_OPERATOR},
            ["alice", "bob"],
            [Meter("MA", 1, alice, alice), Meter("MEV", 1, bob, bob)],
            [Flexibility("EV", bob, 1, FlexKind.EV_CHARGER, 0.0, 11.0, 0, "MEV")],
        )
        operator, settlement = keyring["operator"], community.settlement
        client.transact_all(
            [(community.token.mint_call(a, "100"), operator) for a in (alice, bob)], gas=300_000
        )
        # both trade from a deposit: bob's buy locks its value, alice's sell its collateral
        calls = []
        for name in ("alice", "bob"):
            calls.append((community.token.approve_call(settlement.address, "100"), keyring[name]))
            calls.append((settlement.deposit_call("100"), keyring[name]))
        client.transact_all(calls, gas=300_000)
        yield chain, community, keyring
    finally:
        chain.stop()


def test_a_band_tightened_after_a_match_is_curtailed_and_refunded_within_a_block(market_on_a_running_chain):
    _, community, keyring = market_on_a_running_chain
    market, clock = community.market, community.clock
    slot = clock.slot_of(community.client.latest_timestamp()) + 8  # its gate is open for two hours
    # the market is fail-closed: the EV trades only in a slot with its band published
    community.limits.publish_bands(
        keyring["ocm"], [Band("EV", clock.start(slot), clock.end(slot), 0.0, 11.0)]
    )
    market.place_order(keyring["alice"], OrderRequest(slot, Side.SELL, "MA", 2.0, "0.1", AssetKind.METER))
    placed = market.place_order(keyring["bob"], OrderRequest(slot, Side.BUY, "EV", 2.0, "0.1"))
    assert placed.filled_kwh == 2.0  # 8 kW on average over the 15 minutes, inside [0, 11]
    bob_before = community.settlement.deposit_of(keyring["bob"].address)
    alice_before = community.settlement.deposit_of(keyring["alice"].address)

    stop = threading.Event()
    curtailer = Curtailer(community, keyring["operator"])
    thread = threading.Thread(target=curtailer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        follower = market.follow_events(community.client.head_block() + 1)
        tightened = Band("EV", clock.start(slot), clock.end(slot), 0.0, 4.0)  # 4 kW: 1 kWh in the slot
        band_block = community.limits.publish_bands(keyring["ocm"], [tightened])["blockNumber"]
        curtailed = []
        deadline = time.monotonic() + 60
        while not curtailed and time.monotonic() < deadline:
            curtailed = [event for event in follower.poll().items if event.name == "TradeCurtailed"]
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert curtailed, "no curtailment within 60 s"
    (event,) = curtailed
    # The band's block is followed by the curtailment one block period later (a second
    # period of slack for a machine too busy to poll in time).
    assert event.block_number - band_block <= 2, f"band in block {band_block}, cut in {event.block_number}"
    assert market.schedule("EV", slot).matched_buy_kwh == 1.0
    assert community.limits.tightest_band("EV", slot).p_max_kw == 4.0
    bob_after = community.settlement.deposit_of(keyring["bob"].address)
    refund = bob_after.free - bob_before.free
    assert refund == Decimal("0.1"), "the buyer gets back the curtailed kWh at the trade price"
    assert bob_before.locked - bob_after.locked == refund
    # the seller's collateral for the cut kWh (at the import price) is unlocked too
    alice_after = community.settlement.deposit_of(keyring["alice"].address)
    collateral = units.units_to_tokens(community.settlement.collateral_price_units(slot))  # per kWh
    assert alice_after.free - alice_before.free == collateral == alice_before.locked - alice_after.locked
    assert market.curtail_preview("EV", slot) == (0, True)
