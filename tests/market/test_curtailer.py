"""The curtailer on a running embedded chain: a band tightened after a match leads to a
curtailment and a refund in the next block or so, with no call by hand."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

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
        operator = keyring["operator"]
        calls = [(community.token.mint_call(bob, "100"), operator)]
        calls += [
            (community.token.approve_call(community.market.address), keyring[n]) for n in ("alice", "bob")
        ]
        client.transact_all(calls, gas=300_000)
        yield chain, community, keyring
    finally:
        chain.stop()


def test_a_band_tightened_after_a_match_is_curtailed_and_refunded_within_a_block(market_on_a_running_chain):
    _, community, keyring = market_on_a_running_chain
    market, clock = community.market, community.clock
    slot = clock.slot_of(community.client.latest_timestamp()) + 8  # its gate is open for two hours
    market.place_order(keyring["alice"], OrderRequest(slot, Side.SELL, "MA", 2.0, "0.1", AssetKind.METER))
    placed = market.place_order(keyring["bob"], OrderRequest(slot, Side.BUY, "EV", 2.0, "0.1"))
    assert placed.filled_kwh == 2.0  # 8 kW on average over the 15 minutes, inside [0, 11]
    bob_before = community.token.balance(keyring["bob"].address)

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
    refund = community.token.balance(keyring["bob"].address) - bob_before
    assert refund == Decimal("0.1"), "the buyer gets back the curtailed kWh at the trade price"
    assert market.curtail_preview("EV", slot) == (0, 0, True)
