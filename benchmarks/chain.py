"""Sustained throughput of the embedded PoA node, next to anvil on the same workload.

Two workloads, each sent over HTTP JSON-RPC by the same client code, pipelined (many
transactions in flight, local nonces, fixed gas so nothing is estimated per send):
  transfers  plain value transfers from several senders
  readings   MeasurementLedger.recordReadings batches of 100 readings (100 meters, one
             minute per batch), the gateway's workload
The embedded node runs as its own process (`lec node start`, 2 s blocks); anvil
(Foundry, Rust, London rules) runs with the same 2 s block time. Both are measured in
this run; the ratio embedded / anvil is what to compare between machines.
Target (issue 3): >= 200 meter readings per second sustained on the embedded node.

usage: .venv/bin/python benchmarks/chain.py [--seconds 40] [--period 2]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from eth_account import Account

from contracts import clock, units
from contracts.accounts import Keyring
from contracts.build import build_contracts
from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import Reading
from contracts.paths import NODE_MODULES, PROJECT_ROOT
from contracts.registry import Role
from node.ports import free_port

READINGS_PER_BATCH = 100
SENDERS = 8
GAS_PER_BATCH = 3_600_000


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                url,
                data=b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}',
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=2).read()
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"node exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    raise SystemExit(f"node at {url} did not come up")


def start_embedded(work: Path, period: int) -> tuple[str, subprocess.Popen, Signer]:
    port = free_port()
    data_dir = work / "embedded"
    log = work / "embedded.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli.main",
            "node",
            "start",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--period",
            str(period),
        ],
        cwd=PROJECT_ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process, log)
    return url, process, Keyring.load_or_create(data_dir)["faucet"]


def start_anvil(work: Path, period: int) -> tuple[str, subprocess.Popen, Signer]:
    port = free_port()
    log = work / "anvil.log"
    process = subprocess.Popen(
        [
            str(NODE_MODULES / ".bin" / "anvil"),
            "--port",
            str(port),
            "--block-time",
            str(period),
            "--hardfork",
            "london",
            "--chain-id",
            "4243",
            "--gas-limit",
            "30000000",
            "--accounts",
            "1",
            "--balance",
            "1000000",
            "--silent",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process, log)
    # anvil's first dev account (its well-known test mnemonic), funded at start.
    funder = Signer.from_key("funder", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
    return url, process, funder


def pipelined(client: ChainClient, sends: list[Callable[[], bytes]]) -> float:
    """Send everything, wait for every receipt; returns elapsed seconds."""
    started = time.perf_counter()
    hashes = [send() for send in sends]
    for tx_hash in hashes:
        client.wait(tx_hash)
    return time.perf_counter() - started


def transfers_per_second(client: ChainClient, funder: Signer, seconds: float) -> tuple[int, float]:
    senders = [Signer("sender", Account.create()) for _ in range(SENDERS)]
    for sender in senders:
        client.transfer_ether(funder, sender.address, 10**20)
    count = max(SENDERS, int(seconds * 60))
    fees = client.suggested_fees()
    sends = [
        (lambda sender=senders[index % SENDERS]: client.send_ether(sender, "0x" + "42" * 20, 1, fees))
        for index in range(count)
    ]
    elapsed = pipelined(client, sends)
    return count, elapsed


def readings_per_second(client: ChainClient, funder: Signer, seconds: float) -> tuple[int, float]:
    keyring = Keyring.ephemeral()
    for name in ("admin", "gateway", "member"):
        client.transfer_ether(funder, keyring[name].address, 10**22)
    admin = keyring["admin"]
    community = Community(client, deploy_community(client, admin, CommunityConfig()))
    community.registry.grant_role(admin, Role.GATEWAY, keyring["gateway"].address)
    community.registry.add_member(admin, keyring["member"].address, "member")
    member = keyring["member"].address
    registrations = [
        (
            lambda i=i: client.send(
                community.registry.contract.functions.registerMeter(
                    units.encode_id(f"M{i:03d}"), i, member, member
                ),
                admin,
                gas=200_000,
            )
        )
        for i in range(READINGS_PER_BATCH)
    ]
    pipelined(client, registrations)
    batches = max(2, int(seconds * 2.5))
    now = clock.minute_of(client.latest_timestamp())
    sends = []
    for batch in range(batches):
        minute = now - 1 - batch
        readings = [
            Reading(f"M{i:03d}", clock.minute_start(minute), 1.0 + i / 100, 0.1, 0.98, -1.0).chain
            for i in range(READINGS_PER_BATCH)
        ]
        call = community.ledger.contract.functions.recordReadings(readings)
        sends.append(lambda call=call: client.send(call, keyring["gateway"], gas=GAS_PER_BATCH))
    elapsed = pipelined(client, sends)
    return batches * READINGS_PER_BATCH, elapsed


def measure(name: str, url: str, funder: Signer, seconds: float, artifacts) -> dict[str, float]:
    client = ChainClient.connect(url, artifacts)
    transfers, transfer_time = transfers_per_second(client, funder, seconds)
    readings, reading_time = readings_per_second(client, funder, seconds)
    print(f"  {name:<9} {transfers} transfers in {transfer_time:.1f} s, ", end="")
    print(f"{readings} readings in {reading_time:.1f} s")
    return {"transfers": transfers / transfer_time, "readings": readings / reading_time}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40, help="approximate length of each workload")
    parser.add_argument("--period", type=int, default=2, help="block period of both nodes (s)")
    args = parser.parse_args()
    artifacts = build_contracts().artifacts
    work = Path(tempfile.mkdtemp(prefix="lec-bench-chain-"))
    results, processes = {}, []
    try:
        for name, starter in (("embedded", start_embedded), ("anvil", start_anvil)):
            url, process, funder = starter(work, args.period)
            processes.append(process)
            results[name] = measure(name, url, funder, args.seconds, artifacts)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'workload':<22} {'embedded /s':>12} {'anvil /s':>10} {'embedded/anvil':>15}")
    for key, label in (("transfers", "plain transfers"), ("readings", "meter readings (x100)")):
        embedded, anvil = results["embedded"][key], results["anvil"][key]
        print(f"{label:<22} {embedded:>12.1f} {anvil:>10.1f} {embedded / anvil:>15.2f}")
    verdict = "meets" if results["embedded"]["readings"] >= 200 else "misses"
    print(f"target: >= 200 readings/s sustained on the embedded node -> {verdict}")


if __name__ == "__main__":
    main()
