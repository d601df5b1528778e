"""``lec status``: a running node's head, sealers, readings, bands, orders, settlement and
gateway backlog, as text and as JSON; clear errors without a node or a deployment."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from contracts import clock
from contracts.community import Community
from contracts.deploy import ensure_deployment
from contracts.ledger import Reading
from contracts.limits import Band
from contracts.market import AssetKind, OrderRequest, Side
from gateway.payload import SignedReading
from gateway.queue import ReadingQueue
from node.cli.main import main
from node.cli.status import collect_status, render_text
from node.config import load_community
from node.demo import Feeder, set_up_community
from node.embedded import EmbeddedChain, open_embedded_chain
from node.ports import free_port
from tests.market_setup import MEMBERS, env, market_chain  # noqa: F401  (fixtures)

COMMUNITY = """\
[community]
name = "Status community"
slot_minutes = 15

[[members]]
name = "alice"
tokens = "100"

[[members]]
name = "bob"
tokens = "100"

[[meters]]
id = "MA"
bus = 1
member = "alice"

[[meters]]
id = "MB"
bus = 2
member = "bob"

[[flexibilities]]
id = "BAT"
owner = "alice"
kind = "battery"
p_min_kw = -10
p_max_kw = 10
bus = 1
"""
RECORDED_MINUTES = 3


@dataclass
class RunningNode:
    chain: EmbeddedChain
    url: str
    data_dir: Path
    community: Community
    minutes: list[int]  # the minutes with readings (Unix minutes)
    slot: int  # the slot of the open orders


@pytest.fixture(scope="module")
def node(tmp_path_factory, artifacts):
    """A served embedded chain with a small community: readings of two meters for the last
    few minutes, a band for the battery from now on, two open orders, a queued reading."""
    data_dir = tmp_path_factory.mktemp("status")
    (data_dir / "community.toml").write_text(COMMUNITY)
    definition = load_community(data_dir / "community.toml")
    chain = open_embedded_chain(data_dir, period=1)
    url = chain.serve("127.0.0.1", 0)
    keyring, client = chain.keyring, chain.client(artifacts)
    config = replace(definition.deployment_config(), gate_closure_minutes=0)  # the next slot stays open
    deployment, _ = ensure_deployment(client, keyring["admin"], data_dir, config)
    community = Community(client, deployment)
    set_up_community(
        community, keyring, definition, Feeder(data_dir / "none.json", [1, 2], frozenset({0, 1, 2}))
    )

    if time.time() % 60 > 50:  # a band starts at the current minute: not on a minute's edge
        time.sleep(61 - time.time() % 60)
    now = clock.minute_of(time.time())
    minutes = list(range(now - RECORDED_MINUTES, now))
    readings = [
        Reading(meter, clock.minute_start(minute), 1.5, 0.2, 1.0, 0.0)
        for minute in minutes
        for meter in ("MA", "MB")
    ]
    community.ledger.record_readings(keyring["gateway"], readings)
    start = clock.minute_start(now)
    community.limits.publish_bands(keyring["ocm"], [Band("BAT", start, start + 30 * 60, -5.0, 5.0)])
    slot = community.clock.slot_of(time.time()) + 1
    market = community.market
    market.place_order(keyring["bob"], OrderRequest(slot, Side.BUY, "MB", 1.0, "0.2", AssetKind.METER))
    market.place_order(keyring["alice"], OrderRequest(slot, Side.SELL, "BAT", 0.5, "0.25"))

    queue = ReadingQueue(data_dir / "gateway" / "queue.sqlite")
    queued = Reading("MA", clock.minute_start(now), 1.0, 0.0, 1.0, 0.0)
    queue.accept([(SignedReading(queued, 1, "0x0", b"digest"), time.time())])
    queue.close()
    yield RunningNode(chain, url, data_dir, community, minutes, slot)
    chain.stop()


def status(capsys, node: RunningNode, *options: str) -> str:
    assert main(["status", "--rpc-url", node.url, "--data-dir", str(node.data_dir), *options]) == 0
    return capsys.readouterr().out


def test_status_as_json(node, capsys):
    report = json.loads(status(capsys, node, "--json"))
    assert report["community"]["name"] == "Status community" and report["rpc_url"] == node.url
    assert report["community"]["contracts"] == node.community.deployment.addresses
    assert report["community"]["meters"] == 3  # MA, MB and the battery's sub-meter
    head = report["head"]
    assert head["number"] >= node.community.client.head_block() - 5 and head["age_s"] < 30
    assert head["hash"].startswith("0x") and len(head["hash"]) == 66
    assert report["sealers"] == [node.chain.keyring["sealer"].address]

    per_minute = {entry["minute"]: entry["readings"] for entry in report["readings_per_minute"]}
    assert len(per_minute) == 10
    assert all(per_minute[minute] == 2 for minute in node.minutes)
    assert sum(per_minute.values()) == 2 * RECORDED_MINUTES

    (band,) = report["bands"]
    assert (band["flexibility"], band["p_min_kw"], band["p_max_kw"], band["source"]) == (
        "BAT",
        -5.0,
        5.0,
        "ocm",
    )
    assert band["hardware_kw"] == [-10.0, 10.0]

    slots = {entry["slot"]: entry for entry in report["open_orders"]}
    current = node.community.clock.slot_of(report["now"])
    assert list(slots) == [current, current + 1]  # the gate closes at the start: the next slot trades
    orders = {
        (o["member"], o["side"], o["asset"], o["remaining_kwh"], o["limit_price"])
        for o in slots[node.slot]["orders"]
    }
    assert orders == {("bob", "buy", "MB", 1.0, "0.2"), ("alice", "sell", "BAT", 0.5, "0.25")}
    assert sum(len(entry["orders"]) for entry in slots.values()) == 2
    assert slots[current + 1]["gate_open"] and not slots[current]["gate_open"]

    assert report["last_settled_slot"] is None
    assert report["band_violations"] == {
        "totals": [{"flexibility": "BAT", "slots": 0, "outside_kwh": 0.0}],
        "recent": [],
    }
    (queue,) = report["gateway_queues"]
    assert queue["path"] == str(node.data_dir / "gateway" / "queue.sqlite")
    assert (queue["queued"], queue["dead_letters"]) == (1, 0) and queue["oldest_reading"] % 60 == 0


def test_status_as_text(node, capsys):
    text = status(capsys, node)
    assert f"community 'Status community' on chain {node.community.deployment.chain_id} at {node.url}" in text
    assert f"sealers (1): {node.chain.keyring['sealer'].address}" in text
    for minute in node.minutes:
        assert f"{time.strftime('%H:%M', time.gmtime(clock.minute_start(minute)))} 2" in text
    assert "BAT      battery    [   -5.000,     5.000] kW  ocm" in text
    assert "1 buy, 1 sell" in text and "gate open until" in text
    assert "buy  #" in text and " bob " in text and "1.000 of 1.000 kWh at 0.2" in text
    assert "last settled slot: none in the last 48 final slots" in text
    assert "band violations (all settled slots): none" in text
    assert "gateway/queue.sqlite: 1 reading queued" in text and "0 dead letters" in text
    assert "last 10 minutes (3 meters registered)" in text


def test_a_node_that_does_not_answer_is_a_clear_error(node, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["status", "--rpc-url", dead, "--data-dir", str(node.data_dir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot reach the node") and dead in error


def test_a_data_directory_without_a_deployment_is_a_clear_error(tmp_path, capsys):
    assert main(["status", "--data-dir", str(tmp_path), "--json"]) == 2
    assert "no community deployment recorded in" in capsys.readouterr().err


def test_the_last_settled_slot_and_band_violations(env, tmp_path):  # noqa: F811  (the fixture)
    """On the market test chain (whose time travels): a slot settled with the EV charger
    outside its tightened band."""
    community, slot = env.community, env.open_slot()
    env.publish_band("EV", slot, 0, 6000)  # tightened to 6 kW
    env.travel(community.clock.start(slot + 1))  # delivered
    env.record_slot("MEV", slot, 7000)  # 1 kW above the band for the whole slot: 0.25 kWh
    for meter in ("MB", "MA", "MBAT", "MPV", "MD"):  # the others at 0 W (a missing minute counts as 20 kW)
        env.record_slot(meter, slot, 0)
    env.travel(community.settlement.final_time(slot))
    community.market.finalize_slot(env["stranger"], slot)
    community.settlement.settle(
        env["operator"], slot, [env[name].address for name in MEMBERS]
    )  # as the operator

    report = collect_status(community, tmp_path, env.now())
    assert report["last_settled_slot"] == {
        "slot": slot, "start": community.clock.start(slot), "end": community.clock.end(slot)
    }  # fmt: skip
    totals = {v["flexibility"]: (v["slots"], v["outside_kwh"]) for v in report["band_violations"]["totals"]}
    assert totals == {"BAT": (0, 0.0), "EV": (1, 0.25), "PV": (0, 0.0)}
    (recent,) = report["band_violations"]["recent"]
    assert (recent["flexibility"], recent["slot"], recent["outside_kwh"], recent["band_kw"]) == (
        "EV",
        slot,
        0.25,
        [0.0, 6.0],
    )
    assert recent["owner"] == env["bob"].address
    assert report["sealers"] is None and report["gateway_queues"] == []  # no Clique node, no queue
    text = render_text({**report, "rpc_url": "eth-tester"})
    assert f"last settled slot: {slot} (" in text
    assert "band violations (all settled slots): EV 1 slot, 0.250 kWh outside" in text
    assert f"    slot {slot} EV: 0.250 kWh outside [0, 6] kW" in text
    assert "sealers: not a Clique node" in text
