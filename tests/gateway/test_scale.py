"""Meter ingest at scale with Mosquitto: an overload held back by MQTT flow control loses
and doubles nothing; two gateways on a shared subscription record every reading exactly
once, also when one of them is killed while the other runs."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from contracts.registry import Role
from gateway.service import MqttSettings
from tests.gateway.brokers import needs_mosquitto
from tests.gateway.conftest import METER_IDS, start_gateway
from tests.gateway.helpers import (
    Publisher,
    recorded,
    recorded_events,
    wait_for,
    wait_published,
)
from tests.gateway.test_crash import GatewayProcess, gateway_data_dir
from tests.gateway.test_delivery import readings_for
from tests.gateway.test_mosquitto import publish

pytestmark = needs_mosquitto()

SHARE_GROUP = "gateways"
SECOND = "gateway-2"


@pytest.fixture
def publishers(mosquitto, topic_community):
    clients = {
        m: Publisher(mosquitto.host, mosquitto.port, f"{topic_community}-{m}", *mosquitto.meter_login(m))
        for m in METER_IDS
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def second_gateway_key(stack):
    """A second submitter key with GATEWAY_ROLE and gas (as ``lec gateway run --enroll`` gives)."""
    signer, admin = stack[SECOND], stack["admin"]
    if not stack.community.registry.has_role(Role.GATEWAY, signer.address):
        stack.community.registry.grant_role(admin, Role.GATEWAY, signer.address)
        stack.community.client.transfer_ether(admin, signer.address, 10**20)
    return signer


def assert_exactly_once(stack, readings, first_block) -> None:
    pairs = [(r.meter_id, r.time) for r in readings]
    wait_for(lambda: all(recorded(stack.community, pairs)), 240, f"all {len(pairs)} readings on chain")
    events = Counter(recorded_events(stack.community, first_block))
    assert {pair: events[pair] for pair in pairs} == dict.fromkeys(pairs, 1)


def test_overload_is_held_in_the_broker_and_loses_and_doubles_nothing(
    stack, artifacts, mosquitto, publishers, tmp_path, topic_community
):
    """Readings offered far faster than the chain takes them (small batches, one transaction
    in flight): the gateway's queue stays bounded, the broker keeps the rest, and in the
    end every reading is on chain once."""
    max_backlog = 60
    first_block = stack.head_block()
    settings = MqttSettings.from_url(mosquitto.gateway_url)
    gateway = start_gateway(stack, artifacts, tmp_path / "q.sqlite", settings, topic_community,
                            max_backlog=max_backlog, max_batch=20, max_in_flight=1)  # fmt: skip
    queued_seen = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            queued_seen.append(gateway.queue.queued)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        wait_for(gateway.connected.is_set, 20, "the gateway to connect")
        readings = readings_for(stack, METER_IDS, stack.take_minutes(8))  # 320 readings
        wait_published(publish(stack, publishers, topic_community, readings))  # the broker has them all
        wait_for(lambda: max(queued_seen, default=0) >= max_backlog, 60, "the backlog to fill")
        assert_exactly_once(stack, readings, first_block)
        done.set()
        sampler.join()
        assert max(queued_seen) <= max_backlog, "the gateway queued beyond its bound"
        stats = gateway.stats()
        assert stats["accepted"] == len(readings) and not any(k.startswith("rejected") for k in stats)
        assert stats["queued"] == 0
    finally:
        done.set()
        sampler.join()
        gateway.stop()


def test_the_newest_minute_overtakes_a_backlog(
    stack, artifacts, mosquitto, publishers, tmp_path, topic_community
):
    """A backlog of eight minutes drains slowly (one 20-reading transaction in flight); the
    newest minute, published after it, is on chain while most of the backlog still waits:
    the OCM sees fresh readings during an overload. In the end all is there exactly once."""
    first_block = stack.head_block()
    settings = MqttSettings.from_url(mosquitto.gateway_url)
    gateway = start_gateway(stack, artifacts, tmp_path / "q.sqlite", settings, topic_community,
                            max_batch=20, max_in_flight=1)  # fmt: skip
    try:
        wait_for(gateway.connected.is_set, 20, "the gateway to connect")
        backlog = readings_for(stack, METER_IDS, stack.take_minutes(8))  # 320 readings
        wait_published(publish(stack, publishers, topic_community, backlog))
        wait_for(lambda: gateway.stats().get("accepted", 0) == len(backlog), 60, "the backlog queued")
        newest = readings_for(stack, METER_IDS, stack.take_minutes(1))
        wait_published(publish(stack, publishers, topic_community, newest))
        newest_pairs = [(r.meter_id, r.time) for r in newest]
        wait_for(lambda: all(recorded(stack.community, newest_pairs)), 120, "the newest minute on chain")
        backlog_pairs = [(r.meter_id, r.time) for r in backlog]
        still_waiting = len(backlog) - sum(recorded(stack.community, backlog_pairs))
        assert still_waiting >= len(backlog) // 4, f"only {still_waiting} backlog readings were still waiting"
        assert_exactly_once(stack, backlog + newest, first_block)
    finally:
        gateway.stop()


def test_two_gateways_share_the_load_exactly_once(
    stack, artifacts, mosquitto, publishers, second_gateway_key, tmp_path, topic_community
):
    first_block = stack.head_block()
    settings = MqttSettings.from_url(mosquitto.gateway_url)
    gateways = [
        start_gateway(
            stack,
            artifacts,
            tmp_path / f"{name}.sqlite",
            settings,
            topic_community,
            signer=stack[name],
            name=name,
            share_group=SHARE_GROUP,
        )
        for name in ("gateway", SECOND)
    ]
    try:
        for gateway in gateways:
            wait_for(gateway.connected.is_set, 20, f"{gateway.name} to connect")
        readings = readings_for(stack, METER_IDS, stack.take_minutes(4))
        wait_published(publish(stack, publishers, topic_community, readings))
        assert_exactly_once(stack, readings, first_block)
        accepted = [gateway.stats().get("accepted", 0) for gateway in gateways]
        assert sum(accepted) == len(readings) and min(accepted) > 0, accepted  # each took a share
        senders = {tx["from"] for tx in _ledger_transactions(stack, first_block)}
        assert senders == {stack["gateway"].address, stack[SECOND].address}  # each with its own key
    finally:
        for gateway in gateways:
            gateway.stop()


def test_a_gateway_killed_while_the_other_runs(
    stack, artifacts, mosquitto, publishers, second_gateway_key, tmp_path, topic_community
):
    """The second gateway is a process killed with SIGKILL mid-stream. The first goes on
    taking its share; Mosquitto (2.0) keeps the killed gateway's share in that gateway's
    persistent session, and the restarted gateway delivers it: nothing lost, nothing twice."""
    first_block = stack.head_block()
    data_dir = gateway_data_dir(stack, tmp_path / "second")
    killed = GatewayProcess(stack, data_dir, mosquitto, topic_community)
    killed.command += ["--name", SECOND, "--share-group", SHARE_GROUP]
    (data_dir / "keys.json").write_text(f'{{"{SECOND}": "{stack[SECOND].account.key.hex()}"}}')
    killed.start()
    survivor = start_gateway(stack, artifacts, tmp_path / "survivor.sqlite",
                             MqttSettings.from_url(mosquitto.gateway_url), topic_community,
                             name="gateway", share_group=SHARE_GROUP)  # fmt: skip
    try:
        wait_for(survivor.connected.is_set, 20, "the surviving gateway to connect")
        before = readings_for(stack, METER_IDS, stack.take_minutes(3))
        wait_published(publish(stack, publishers, topic_community, before))
        wait_for(lambda: sum(recorded(stack.community, [(r.meter_id, r.time) for r in before])) >= 40, 120,
                 "the first readings on chain")  # fmt: skip
        killed.kill()
        taken_before_kill = survivor.stats().get("accepted", 0)
        during = readings_for(stack, METER_IDS, stack.take_minutes(3))
        wait_published(publish(stack, publishers, topic_community, during))
        during_pairs = [(r.meter_id, r.time) for r in during]
        wait_for(lambda: survivor.stats().get("accepted", 0) - taken_before_kill >= len(during) // 3, 120,
                 "the surviving gateway to go on taking its share")  # fmt: skip
        wait_for(lambda: sum(recorded(stack.community, during_pairs)) >= len(during) // 3, 120,
                 "the survivor's share on chain while the other is down")  # fmt: skip
        killed.start()
        assert_exactly_once(stack, before + during, first_block)
    finally:
        survivor.stop()
        killed.stop()


def _ledger_transactions(stack, first_block: int) -> list[dict]:
    w3, ledger = stack.community.client.w3, stack.community.ledger.contract.address
    transactions = []
    for number in range(first_block + 1, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        transactions += [tx for tx in block["transactions"] if tx["to"] == ledger]
    return transactions


def test_the_queue_serves_fresh_readings_first_and_drains_the_backlog(tmp_path):
    """Half of each batch goes to the newest minutes, newest first; the other half to the
    oldest backlog; what is taken is not taken again until released; a restart releases."""
    from contracts.ledger import Reading
    from gateway.payload import SignedReading
    from gateway.queue import ReadingQueue

    queue = ReadingQueue(tmp_path / "queue.sqlite")
    start = 1_767_225_600
    readings = [
        Reading(f"M{m}", start + 60 * minute, 1.0, 0.0, 1.0, 0.0) for minute in range(10) for m in range(4)
    ]
    signed = [SignedReading(r, n, "0x0", f"digest-{n}".encode()) for n, r in enumerate(readings)]
    queue.accept([(item, time.time()) for item in signed])
    latest = start + 60 * 9
    batch = queue.take(8, latest, fresh_share=0.5)
    times = [item.reading.time for item in batch]
    assert times[:4] == [latest] * 4  # the newest minute of every meter first
    assert times[4:] == [start] * 4  # then the oldest backlog
    second = queue.take(8, latest, fresh_share=0.5)
    assert not {item.id for item in batch} & {item.id for item in second}
    assert [item.reading.time for item in second] == [latest - 60] * 4 + [start + 60] * 4
    queue.release([item.id for item in second])
    again = queue.take(8, latest, fresh_share=0.5)
    assert {item.id for item in again} == {item.id for item in second}
    assert all(item.attempts == 1 for item in again)  # it was sent once before: checked on chain first
    queue.close()
    reopened = ReadingQueue(tmp_path / "queue.sqlite")  # a restart: nothing is in flight any more
    assert reopened.queued == len(readings)
    assert len(reopened.take(100, latest)) == len(readings)
    reopened.close()
