"""The ``lec`` command line: help texts and the community node on embedded defaults."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from contracts.client import ChainClient
from contracts.deploy import Deployment
from contracts.paths import PROJECT_ROOT
from node.mosquitto import MosquittoBroker, derive_password, load_secret
from node.ports import free_port


def lec(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node.cli.main", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )


def test_help_lists_the_subcommands():
    completed = lec("--help")
    assert completed.returncode == 0
    for command in ("up", "node", "contracts", "loadflow"):
        assert command in completed.stdout


def test_unknown_subcommand_is_a_usage_error():
    completed = lec("frobnicate")
    assert completed.returncode == 2 and "invalid choice" in completed.stderr


def run_up_until_ready(
    data_dir, port, mqtt_port, *extra, options=(), api_port=None
) -> tuple[subprocess.Popen, list[str]]:
    command = [sys.executable, "-m", "node.cli.main", *extra, "up", "--data-dir", str(data_dir),
               "--port", str(port), "--ws-port", "0", "--mqtt-port", str(mqtt_port),
               "--api-port", str(api_port or free_port()), *options]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + 600  # a limit for a broken start, not a speed test
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "community node running" in line:
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return process, lines
    process.kill()
    raise AssertionError("lec up did not come up:\n" + "".join(lines))


def stop(process: subprocess.Popen, lines: list[str]) -> int:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=300)  # a loaded machine may take long to end every service
    time.sleep(0.5)  # the reader thread drains the rest of the output
    return process.returncode


def wait_for_events(client, deployment, wanted, timeout=600):
    """Block until each (contract, event) in ``wanted`` has been emitted at least once."""
    deadline, missing = time.monotonic() + timeout, set(wanted)
    while missing and time.monotonic() < deadline:
        for contract_name, event_name in list(missing):
            contract = client.contract(contract_name, deployment.addresses[contract_name])
            if getattr(contract.events, event_name)().get_logs(from_block=0):
                missing.discard((contract_name, event_name))
        time.sleep(2)
    assert not missing, f"never emitted: {sorted(missing)}"


def test_up_runs_the_whole_community_and_keeps_keys_secret(tmp_path, artifacts):
    data_dir, port, mqtt_port, api_port = tmp_path / "community", free_port(), free_port(), free_port()
    process, lines = run_up_until_ready(data_dir, port, mqtt_port, "-v", api_port=api_port)
    try:
        check_api(f"http://127.0.0.1:{api_port}", data_dir)
        if MosquittoBroker.available():  # the broker is Mosquitto, a process of its own
            pid = int((data_dir / "mosquitto" / "mosquitto.pid").read_text())
            assert b"mosquitto" in Path(f"/proc/{pid}/cmdline").read_bytes()
            socket.create_connection(("127.0.0.1", mqtt_port), timeout=10).close()
        client = ChainClient.connect(f"http://127.0.0.1:{port}", artifacts)
        deployment = Deployment.load(data_dir)
        wait_for_events(
            client,
            deployment,
            {
                ("MeasurementLedger", "PhaseReadingsRecorded"),  # simulator -> MQTT -> gateway -> chain
                ("CapacityLimits", "BandPublished"),  # OCM service
                ("EnergyMarket", "OrderPlaced"),  # market agents
            },
        )
    finally:
        assert stop(process, lines) == 0
    first = "".join(lines)
    assert "(deployed)" in first and "57 household meters, 5 sub-meters" in first
    if MosquittoBroker.available():
        assert f"MQTT: mosquitto on mqtt://127.0.0.1:{mqtt_port} (a password per meter, ACL" in first
        assert not Path(f"/proc/{pid}").exists(), "lec up stopped Mosquitto"

    # ports need not be the same; the embedded broker on request
    process, lines = run_up_until_ready(data_dir, free_port(), free_port(), options=["--embedded-broker"])
    assert stop(process, lines) == 0
    second = "".join(lines)
    assert "(found)" in second and deployment.addresses["CommunityRegistry"] in second
    assert "MQTT: embedded broker (amqtt)" in second and "no passwords and no ACL" in second

    keys = json.loads((data_dir / "keys.json").read_text())
    assert (data_dir / "keys.json").stat().st_mode & 0o077 == 0, "keys.json is private to its owner"
    for key in keys.values():
        assert key.lower().removeprefix("0x") not in (first + second).lower()
    if MosquittoBroker.available():  # no MQTT password, nor the secret they come from, is shown
        mosquitto = data_dir / "mosquitto"
        users = [line.split(":")[0] for line in (mosquitto / "passwd").read_text().splitlines()]
        assert "gateway" in users and len(users) == 1 + 62  # the gateway, 57 households, 5 sub-meters
        secret = load_secret(mosquitto)
        shown = first + second + (mosquitto / "mosquitto.log").read_text()
        assert secret.hex() not in shown
        for user in users:
            assert derive_password(secret, "gateway" if user == "gateway" else "meter", user) not in shown


def check_api(url: str, data_dir: Path) -> None:
    """The API of ``lec up``: the community, the feeder drawn from its network, both pages,
    and a device's OpenADR 3 token from the credentials ``lec openadr credentials`` prints."""
    import httpx

    community = httpx.get(f"{url}/v1/community", timeout=30).json()
    assert community["name"] == "Demo energy community" and community["slot_minutes"] == 15
    feeder = httpx.get(f"{url}/v1/feeder", timeout=30).json()
    assert len(feeder["buses"]) == 116 and {f["flex_id"] for f in feeder["flexibilities"]} >= {
        "BAT01",
        "CS01",
    }
    for page in ("/member", "/dso"):
        answer = httpx.get(url + page, timeout=30)
        assert answer.status_code == 200 and "<html" in answer.text.lower()
    printed = lec("openadr", "credentials", "CS01", "--data-dir", str(data_dir))
    assert printed.returncode == 0, printed.stderr
    secret = printed.stdout.split("client_secret:")[1].split()[0]
    token = httpx.post(
        f"{url}/openadr3/3.0.1/auth/token",
        data={"grant_type": "client_credentials", "client_id": "CS01", "client_secret": secret},
        timeout=30,
    )
    assert token.status_code == 200 and token.json()["token_type"].lower() == "bearer"
    events = httpx.get(
        f"{url}/openadr3/3.0.1/events",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=30,
    )
    assert events.status_code == 200 and [event["id"] for event in events.json()] == ["band-CS01"]


def test_up_bad_options_are_clear_errors(tmp_path):
    completed = lec("up", "--data-dir", str(tmp_path), "--slot-minutes", "0")
    assert completed.returncode == 2 and "--slot-minutes must be 1..64" in completed.stderr
    completed = lec("up", "--data-dir", str(tmp_path), "--mqtt-port", "70000")
    assert completed.returncode == 2 and "--mqtt-port must be 0..65535" in completed.stderr
    for speed in ("0", "-5", "25", "nan"):
        completed = lec("up", "--data-dir", str(tmp_path), "--clock-speed", speed)
        assert completed.returncode == 2, completed.stderr
        assert f"--clock-speed must be > 0 and at most 20, got {float(speed):g}" in completed.stderr
    help_text = " ".join(lec("up", "--help").stdout.split())
    assert "for demos and tests: N simulated seconds per real second" in help_text


def test_a_chain_that_ran_accelerated_continues_at_normal_speed(tmp_path, monkeypatch):
    from eth.consensus.clique import _utils as clique_utils

    from contracts import clock
    from node.cli.up import start_clock
    from node.embedded import open_embedded_chain
    from tests.waiting import wait_for

    monkeypatch.setattr(clique_utils, "eth_now", clique_utils.eth_now)  # all three are restored
    monkeypatch.setattr(clock, "_clock", clock._clock)
    monkeypatch.setenv(clock.CLOCK_ENV, "1 0 0")
    chain = open_embedded_chain(tmp_path)
    try:
        start_clock(chain, 20)
        wait_for(lambda: chain.node.head.timestamp > time.time() + 120, "a head two minutes ahead", 30)
    finally:
        chain.stop()
    chain = open_embedded_chain(tmp_path)  # a restart at normal speed
    try:
        ahead = chain.node.head
        start_clock(chain, 1)
        assert clock.now() >= ahead.timestamp - chain.node.period and clock.speed() == 1
        wait_for(lambda: chain.node.head.block_number > ahead.block_number + 1, "blocks after a restart", 30)
        assert chain.node.head.timestamp > ahead.timestamp
    finally:
        chain.stop()


def test_api_and_openadr_bad_options_are_clear_errors(tmp_path):
    completed = lec("api", "--data-dir", str(tmp_path), "--port", "70000")
    assert completed.returncode == 2 and "--port must be 0..65535, got 70000" in completed.stderr
    completed = lec("api", "--data-dir", str(tmp_path), "--network", str(tmp_path / "nope.json"))
    assert completed.returncode == 2 and "--network: no such file" in completed.stderr
    completed = lec("api", "--data-dir", str(tmp_path), "--port", "0")
    assert completed.returncode == 2 and "no community deployment recorded" in completed.stderr
    completed = lec("openadr", "credentials", "CS01", "--data-dir", str(tmp_path))
    assert completed.returncode == 2 and "api-secret" in completed.stderr
    assert "Traceback" not in completed.stderr
