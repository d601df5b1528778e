"""The gateway as a process, killed with SIGKILL in mid-stream and started again: every
reading ends on chain once, with the embedded broker and with Mosquitto."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from contracts.paths import PROJECT_ROOT
from gateway.service import reading_topic
from tests.gateway.brokers import AmqttBroker, MosquittoBroker, needs_mosquitto
from tests.gateway.conftest import METER_IDS
from tests.gateway.helpers import (
    Publisher,
    recorded,
    recorded_events,
    signed_payload,
    wait_for,
    wait_published,
)
from tests.gateway.test_delivery import readings_for
from tests.processes import interrupt, kill_hard


@pytest.fixture(params=["amqtt", pytest.param("mosquitto", marks=needs_mosquitto())])
def any_broker(request, tmp_path):
    broker = AmqttBroker(tmp_path) if request.param == "amqtt" else MosquittoBroker(tmp_path, METER_IDS)
    yield broker
    broker.close()


class GatewayProcess:
    """``lec gateway run`` in its own process, on a data directory with the gateway key."""

    def __init__(self, stack, data_dir: Path, broker, topic: str):
        self.command = [
            sys.executable, "-m", "tests.gateway.cli_runner", "gateway", "run",
            "--data-dir", str(data_dir), "--rpc-url", stack.url,
            "--mqtt-url", broker.gateway_url, "--community", topic,
        ]  # fmt: skip
        self.log = data_dir / "gateway.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, cwd=PROJECT_ROOT, stdout=log, stderr=log)
        wait_for(lambda: "connected to" in self.log.read_text() or self.process.poll() is not None, 180,
                 "the gateway process to connect")  # fmt: skip
        assert self.process.poll() is None, self.log.read_text()
        return self

    def kill(self) -> None:
        kill_hard(self.process)

    def stop(self) -> None:
        interrupt(self.process)


def gateway_data_dir(stack, path: Path) -> Path:
    path.mkdir()
    keys = path / "keys.json"
    keys.write_text(json.dumps({"gateway": stack["gateway"].account.key.hex()}))
    keys.chmod(0o600)
    stack.community.deployment.save(path)
    return path


def test_kill_9_mid_batch_loses_and_doubles_nothing(stack, any_broker, tmp_path, topic_community):
    topic = f"{topic_community}-{any_broker.kind}"
    data_dir = gateway_data_dir(stack, tmp_path / "gateway")
    first_block = stack.head_block()
    gateway = GatewayProcess(stack, data_dir, any_broker, topic).start()
    meters = {m: Publisher(any_broker.host, any_broker.port, f"{topic}-{m}", *any_broker.meter_login(m))
              for m in METER_IDS}  # fmt: skip
    readings = readings_for(stack, METER_IDS, stack.take_minutes(12))
    infos = []
    killed = threading.Event()

    def publish_stream() -> None:  # the second half waits for the kill: it comes mid-stream however slow
        for n, reading in enumerate(readings):
            if n == len(readings) // 2:
                killed.wait(timeout=300)
            payload = signed_payload(reading, stack.meter_key(reading.meter_id).account)
            infos.append(meters[reading.meter_id].publish(reading_topic(topic, reading.meter_id), payload))
            time.sleep(0.012)

    stream = threading.Thread(target=publish_stream)
    stream.start()
    try:
        wait_for(
            lambda: len(recorded_events(stack.community, first_block)) >= 120, 120, "120 readings on chain"
        )
        gateway.kill()
        killed_at = len(infos)
        killed.set()
        gateway.start()
        stream.join()
        assert 0 < killed_at < len(readings), "the gateway died while readings were still coming"
        wait_published(infos)
        pairs = [(r.meter_id, r.time) for r in readings]
        wait_for(lambda: all(recorded(stack.community, pairs)), 180, f"all {len(pairs)} readings on chain")
        events = Counter(recorded_events(stack.community, first_block))
        assert {pair: events[pair] for pair in pairs} == dict.fromkeys(pairs, 1)

        def queue_empty() -> bool:
            with sqlite3.connect(data_dir / "gateway" / "queue.sqlite") as db:
                return db.execute("SELECT count(*) FROM queue").fetchone()[0] == 0

        wait_for(queue_empty, 60, "the restarted gateway's queue to empty")
    finally:
        killed.set()
        stream.join()
        for publisher in meters.values():
            publisher.close()
        gateway.stop()
