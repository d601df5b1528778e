"""A real multi-node proof-of-authority network: three unmodified geth 1.13.15 sealers of
one Clique chain on 127.0.0.1, used through the project's own chain client, deploy code
and command line.

The tests share one network and run in file order: peering and sealing in turn, the
community contracts deployed on one node and read on another, a service command run
against it by --rpc-url, one sealer stopped while transactions keep being mined (none
lost), then a node that joins late, syncs, is voted in, seals, and is voted out.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest
from eth_account import Account

from contracts import clock
from contracts.accounts import KEYS_FILE, Keyring
from contracts.client import ChainClient
from contracts.community import Community
from contracts.deploy import CommunityConfig, Deployment, deploy_community
from contracts.ledger import Reading
from contracts.limits import Band, BandSource
from contracts.paths import PROJECT_ROOT
from contracts.registry import Flexibility, FlexKind, Meter, Role
from node.geth import CHAIN_ID, GethNetwork, geth_executable
from node.ports import free_port
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        geth_executable() is None and shutil.which("go") is None,
        reason="geth 1.13.15 is missing and there is no Go toolchain to build it",
    ),
]

PERIOD = 1
SEALERS = 3
STOPPED = 2  # the sealer taken down
CONFIRMATIONS = 2  # several sealers may reorganise a short branch: build on settled blocks
ACCOUNTS = ("admin", "gateway", "ocm", "alice", "meter-M01")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def keyring(keys_dir) -> Keyring:
    keyring = Keyring.load_or_create(keys_dir)
    for name in ACCOUNTS:
        keyring.signer(name)
    return keyring


@pytest.fixture(scope="module")
def network(keyring, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("geth")
    funded = [keyring[name].address for name in keyring.names]
    with GethNetwork(sealers=SEALERS, period=PERIOD, data_dir=data_dir, fund=funded) as net:
        yield net
    assert all(not node.running for node in net.nodes), "a geth process outlived the network"


@pytest.fixture(scope="module")
def community_state():
    """What the community test leaves for the later ones."""
    return {}


def wait_for_block(client: ChainClient, number: int) -> None:
    wait_for(lambda: client.w3.eth.block_number >= number, f"block {number}")


def test_three_sealers_peer_and_seal_in_turn(network):
    assert len(set(network.sealers)) == SEALERS
    for node in network.nodes:
        assert network.peer_count(node.index) == SEALERS - 1, f"node {node.index} is not connected to all"
        assert int(node.rpc("eth_chainId"), 16) == CHAIN_ID
    assert set(network.signers(0)) == set(network.sealers)

    # Right after the start a sealer may still be catching up while the other two alternate;
    # within a few rounds every sealer takes its turns.
    def every_sealer_in_the_last_blocks() -> bool:
        head = network.height(0)
        window = network.block_signers(0, range(head - 2 * SEALERS + 1, head + 1))
        return set(window.values()) == set(network.sealers)

    network.wait_for_blocks(2 * SEALERS)
    wait_for(every_sealer_in_the_last_blocks, "every sealer to seal within 2N consecutive blocks", 120)
    head = network.height(0)
    numbers = range(head - 2 * SEALERS + 1, head + 1)
    signers = network.block_signers(0, numbers)
    ranked = sorted(network.sealers, key=lambda address: int(address, 16))
    network.wait_until_synced()
    for number in numbers:
        block = network.block(0, number)
        if int(block["difficulty"], 16) == 2:  # in turn: the signer of block n is sorted(signers)[n % N]
            assert signers[number] == ranked[number % SEALERS], f"block {number} sealed out of order"
        for index in (1, 2):
            assert network.block(index, number)["hash"] == block["hash"], f"node {index} differs at {number}"

    # sealer keys stay in their keystores (mode 0600) and out of every log
    for node in network.nodes:
        for secret in (node.data_dir / "password.txt", *(node.data_dir / "keystore").iterdir()):
            assert secret.stat().st_mode & 0o077 == 0, secret
        log = node.log_file.read_text()
        assert node.account.key.hex().removeprefix("0x") not in log
        assert (node.data_dir / "password.txt").read_text() not in log


def test_community_contracts_work_across_nodes(network, keyring, artifacts, community_state):
    admin, gateway, ocm, alice = (keyring[name] for name in ("admin", "gateway", "ocm", "alice"))
    writer = ChainClient.connect(network.rpc_urls[0], artifacts, confirmations=CONFIRMATIONS)
    deployment = deploy_community(writer, admin, CommunityConfig(name="geth network", slot_minutes=15))
    assert deployment.chain_id == CHAIN_ID
    community = Community(writer, deployment)
    community.registry.grant_role(admin, Role.GATEWAY, gateway.address)
    community.registry.grant_role(admin, Role.OCM_ORACLE, ocm.address)
    community.registry.add_member(admin, alice.address, "alice")
    community.registry.register_meter(admin, Meter("M01", 2, alice.address, keyring["meter-M01"].address))
    community.registry.register_flexibility(
        admin, Flexibility("BAT01", alice.address, 2, FlexKind.BATTERY, -5.0, 5.0, 0, "M01")
    )

    # readings for minutes already begun and a band for minutes still to come, by block time
    minute = clock.minute_of(writer.latest_timestamp())
    slot = (minute - 1) // 15
    past = [m for m in range(minute - 3, minute) if m // 15 == slot] or [minute - 1]
    readings = [Reading("M01", clock.minute_start(m), 1.0 + i, 0.2, 0.99, -1.0) for i, m in enumerate(past)]
    recorded = community.ledger.record_readings(gateway, readings)
    band = Band("BAT01", clock.minute_start(minute + 3), clock.minute_start(minute + 5), -2.0, 3.0)
    published = community.limits.publish_bands(ocm, [band])

    reader = ChainClient.connect(network.rpc_urls[1], artifacts)
    wait_for_block(reader, published["blockNumber"])
    read = Community(reader, deployment)
    assert read.registry.meter("M01").member == alice.address
    assert all(read.ledger.has_reading("M01", reading.time) for reading in readings)
    energy = read.ledger.slot_energy("M01", slot)
    assert energy.readings == len(readings)
    assert energy.active_kwh == pytest.approx(sum(1.0 + i for i in range(len(readings))) / 60)
    in_force = read.limits.band_at("BAT01", band.start)
    assert (in_force.p_min_kw, in_force.p_max_kw, in_force.source) == (-2.0, 3.0, BandSource.OCM)
    for index in range(SEALERS):  # the same blocks everywhere
        for receipt in (recorded, published):
            assert network.block(index, receipt["blockNumber"])["hash"] == receipt["blockHash"].to_0x_hex()
    community_state["deployment"] = deployment


def test_lec_contracts_deploy_runs_against_the_network_by_rpc_url(network, keys_dir, tmp_path, artifacts):
    data_dir = tmp_path / "community"
    data_dir.mkdir()
    shutil.copy(keys_dir / KEYS_FILE, data_dir / KEYS_FILE)  # the admin funded in the genesis

    def deploy(url: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "node.cli.main", "contracts", "deploy", "--rpc-url", url,
             "--data-dir", str(data_dir), "--community", "deployed by lec"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "deployed on chain 4243" in deploy(network.rpc_urls[2])
    deployment = Deployment.load(data_dir)
    reader = Community(ChainClient.connect(network.rpc_urls[0], artifacts), deployment)
    wait_for(
        lambda: reader.client.w3.eth.get_code(deployment.addresses["Settlement"]) != b"", "node 0 to see it"
    )
    assert "already deployed" in deploy(network.rpc_urls[1])  # recorded, found on another node, reused


def test_the_gateway_and_the_meter_simulator_run_against_the_network(network, keyring, tmp_path, artifacts):
    """Services are plain JSON-RPC clients: meters published over MQTT end up on the geth chain."""
    data_dir = tmp_path / "community"
    data_dir.mkdir()
    accounts = Keyring.load_or_create(data_dir)  # the services' own keys, funded by the genesis admin
    rpc_url = network.rpc_urls[1]
    client = ChainClient.connect(rpc_url, artifacts, confirmations=CONFIRMATIONS)
    for name in ("admin", "gateway"):
        client.transfer_ether(keyring["admin"], accounts[name].address, 10**21)
    deployment = deploy_community(client, accounts["admin"], CommunityConfig(name="geth meters"))
    deployment.save(data_dir)
    registry = Community(client, deployment).registry
    registry.grant_role(accounts["admin"], Role.GATEWAY, accounts["gateway"].address)
    mqtt_url = f"mqtt://127.0.0.1:{free_port()}"
    lec = [sys.executable, "-m", "node.cli.main", "-v"]
    common = ["--data-dir", str(data_dir), "--rpc-url", rpc_url, "--mqtt-url", mqtt_url]
    gateway_log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen([*lec, "gateway", "run", "--embedded-broker", *common], cwd=PROJECT_ROOT,
                               stdout=gateway_log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: "lec gateway:" in (tmp_path / "gateway.log").read_text(), "the gateway to start")
        simulator = subprocess.run(
            [*lec, "meters", "simulate", "--register", "--meters", "3", "--start", "-3", "--minutes", "3",
             "--speed", "60", *common],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert simulator.returncode == 0, simulator.stdout[-2000:] + simulator.stderr[-2000:]
        ledger = Community(ChainClient.connect(network.rpc_urls[0], artifacts), deployment).ledger
        recorded = ledger.follow_readings(0)
        seen = []
        wait_for(lambda: len(seen.__iadd__(recorded.poll().items)) >= 6, "readings of 3 meters on chain", 180)
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)
        gateway_log.close()


def test_no_transaction_is_lost_when_a_sealer_stops(network, keyring, artifacts, community_state):
    if "deployment" not in community_state:
        pytest.skip("needs the community deployed by the previous test")
    remaining = [node.index for node in network.nodes if node.index != STOPPED]
    sender = ChainClient.connect(network.rpc_urls[remaining[1]], artifacts)
    alice = keyring["alice"]
    recipients = [Account.create().address for _ in range(12)]
    hashes = []
    for i, recipient in enumerate(recipients):
        if i == 4:
            network.stop_node(STOPPED)  # the sealer goes away while transactions are in flight
        hashes.append(sender.send_ether(alice, recipient, 10**15 + i))
    assert not network.nodes[STOPPED].running
    for tx_hash in hashes:
        assert sender.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)["status"] == 1
    other = ChainClient.connect(network.rpc_urls[remaining[0]], artifacts)
    wait_for_block(other, sender.w3.eth.block_number)
    assert [other.w3.eth.get_balance(r) for r in recipients] == [10**15 + i for i in range(len(recipients))]

    head = network.wait_for_blocks(2 * SEALERS, index=remaining[0])
    signers = network.block_signers(remaining[0], range(head - 2 * SEALERS + 1, head + 1))
    assert set(signers.values()) == {network.sealers[index] for index in remaining}, signers

    # a community transaction sent to one remaining node is mined and seen by the other
    granting = Community(
        ChainClient.connect(network.rpc_urls[remaining[1]], artifacts, confirmations=CONFIRMATIONS),
        community_state["deployment"],
    )
    receipt = granting.registry.grant_role(keyring["admin"], Role.DSO, keyring["dso"].address)
    watcher = Community(other, community_state["deployment"])
    wait_for_block(other, receipt["blockNumber"])
    assert watcher.registry.has_role(Role.DSO, keyring["dso"].address)


def test_a_late_node_syncs_is_voted_in_seals_is_voted_out_and_survives_kill_9(network):
    reference = next(node.index for node in network.live_nodes())
    head = network.height(reference)
    late = network.add_node()
    wait_for(lambda: network.height(late) >= head, "the late node to sync")
    assert network.block(late, head)["hash"] == network.block(reference, head)["hash"]
    newcomer = network.nodes[late].address
    assert newcomer not in network.signers(reference)

    network.vote(late, True)  # both running sealers: 2 of 2 is a majority
    network.wait_for_signers(lambda signers: newcomer in signers, "the late node to be voted in")
    voted_in = network.height(reference)
    wait_for(
        lambda: (
            newcomer
            in network.block_signers(reference, range(voted_in, network.height(reference) + 1)).values()
        ),
        "a block sealed by the late node",
    )

    network.vote(late, False)  # now 3 of the 4 signers are running: 3 votes to drop it
    network.wait_for_signers(lambda signers: newcomer not in signers, "the late node to be voted out")
    assert network.nodes[STOPPED].address in network.signers(reference), "the stopped sealer stays a signer"
    network.wait_for_blocks(2, index=reference)

    network.kill_node(late)  # kill -9, then back: it catches up with the blocks it missed
    missed = network.wait_for_blocks(3, index=reference)
    network.restart_node(late)
    wait_for(lambda: network.height(late) >= missed, "the restarted node to catch up")
    assert network.block(late, missed)["hash"] == network.block(reference, missed)["hash"]


def test_a_node_whose_port_another_program_took_starts_on_new_ports(tmp_path, monkeypatch):
    from node import geth

    taken = socket.create_server(("127.0.0.1", 0))  # another program got the RPC port first
    pick = geth.free_ports
    picks = iter([[*pick(1), taken.getsockname()[1], *pick(2)]])
    monkeypatch.setattr(geth, "free_ports", lambda count: next(picks, None) or pick(count))
    with taken, GethNetwork(sealers=1, period=1, data_dir=tmp_path / "net") as single:
        assert single.nodes[0].rpc_port != taken.getsockname()[1]
        assert "address already in use" in single.nodes[0].log_file.read_text()
        assert single.wait_for_blocks(1) >= 2
