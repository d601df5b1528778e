"""``debug_traceTransaction`` and ``debug_traceCall`` in geth's callTracer format.

The same transactions (same keys, so the same contract addresses) run on the embedded node
and on anvil, and their call frame trees must be equal; where geth 1.13.15 is built, geth
re-imports the embedded chain and its own callTracer must give exactly the embedded node's
traces, every field of every frame. The workload: small contracts written as raw EVM
bytecode for precise cases (a prober that STATICCALLs, DELEGATECALLs, CALLCODEs, CALLs with
value, calls a contract that reverts with ``Error(string)``, one that runs out of gas, one
that writes under STATICCALL, an invalid opcode, the sha256 precompile, CREATE, CREATE2, a
reverting CREATE and a SELFDESTRUCT; called twice, so that its CREATE2 collides), a CALL
with more value than its caller holds, failing top-level transactions (revert, out of gas,
a reverting contract creation), and the community contracts (deployments with their
constructors, role checks as nested STATICCALLs, custom-error reverts).

On the embedded node the bytecode workload lands in one block (sealing paused meanwhile),
so most of it is traced behind earlier transactions of the same block.

Against anvil every field is compared, gas fields included, except what anvil reports
differently from geth (``as_anvil_would_compare``): the top frame's ``gas``, frames of
calls refused before they start a message, and revm's names for some errors. geth agrees
on all of those, and on everything else, without exception.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import rlp
from eth_abi import encode
from eth_hash.auto import keccak
from web3 import Web3

from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.registry import Role
from node.chain.export import export_chain
from node.embedded import open_embedded_chain
from node.geth import geth_executable, import_chain, serving
from node.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil's first dev account
CALL_TRACER = {"tracer": "callTracer"}
ETHER = 10**18
FEES = {"maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}

# Fixed keys: the same addresses on every chain and in every run.
TRACER = Signer.from_key("tracer", keccak(b"lec-node tracing test: tracer"))
ADMIN = Signer.from_key("admin", keccak(b"lec-node tracing test: admin"))


# ------------------------------------------------------------ EVM bytecode

OPCODES = {
    "STOP": 0x00,
    "CALLER": 0x33,
    "CALLDATASIZE": 0x36,
    "CALLDATACOPY": 0x37,
    "CODECOPY": 0x39,
    "POP": 0x50,
    "MSTORE": 0x52,
    "SSTORE": 0x55,
    "JUMP": 0x56,
    "JUMPDEST": 0x5B,
    "MSTORE8": 0x53,
    "ADD": 0x01,
    "DUP1": 0x80,
    "RETURNDATACOPY": 0x3E,
    "CREATE": 0xF0,
    "CALL": 0xF1,
    "CALLCODE": 0xF2,
    "RETURN": 0xF3,
    "DELEGATECALL": 0xF4,
    "CREATE2": 0xF5,
    "STATICCALL": 0xFA,
    "REVERT": 0xFD,
    "INVALID": 0xFE,
    "SELFDESTRUCT": 0xFF,
}


def asm(*items: str | int | bytes) -> bytes:
    """Bytecode: a name is an opcode, an int is pushed in as few bytes as it takes (PUSH1
    for 0: London has no PUSH0), bytes are pushed as they are (PUSH20 for an address)."""
    code = bytearray()
    for item in items:
        if isinstance(item, str):
            code.append(OPCODES[item])
            continue
        raw = item if isinstance(item, bytes) else item.to_bytes(max(1, (item.bit_length() + 7) // 8), "big")
        code += bytes([0x5F + len(raw)]) + raw
    return bytes(code)


def word2(value: int) -> bytes:
    return value.to_bytes(2, "big")  # a fixed-width push, so code lengths do not depend on it


def returning(runtime: bytes) -> bytes:
    """Init code that deploys ``runtime``."""
    prelude = asm(word2(len(runtime)), word2(15), 0, "CODECOPY", word2(len(runtime)), 0, "RETURN")
    assert len(prelude) == 15
    return prelude + runtime


def create_address(sender: str | bytes, nonce: int) -> bytes:
    raw = Web3.to_bytes(hexstr=sender) if isinstance(sender, str) else sender
    return keccak(rlp.encode([raw, nonce]))[12:]


def create2_address(sender: bytes, salt: int, init: bytes) -> bytes:
    return keccak(b"\xff" + sender + salt.to_bytes(32, "big") + keccak(init))[12:]


REASON = "not today"
ECHO = asm("CALLDATASIZE", 0, 0, "CALLDATACOPY", "CALLDATASIZE", 0, "RETURN")  # returns its input
_REVERT_DATA = bytes.fromhex("08c379a0") + encode(["string"], [REASON])
REVERTER = asm(word2(len(_REVERT_DATA)), word2(15), 0, "CODECOPY", word2(len(_REVERT_DATA)), 0, "REVERT")
REVERTER += _REVERT_DATA  # reverts with Error("not today")
SPINNER = asm("JUMPDEST", 0, "JUMP")  # loops until out of gas
WRITER = asm(1, 0, "SSTORE", "STOP")
BROKEN = asm("INVALID")
DOOMED = asm("CALLER", "SELFDESTRUCT")  # hands its balance to the caller
SALT = 7


# Contracts that fail in the ways py-evm words differently from geth.
FAULTS = {
    "stack underflow": asm("ADD"),
    "dup underflow": asm("DUP1"),
    "stack overflow": asm("JUMPDEST", 0, 0, "JUMP"),  # one more item each round
    "bad jump": asm(0, 0, "JUMP") + asm("STOP"),  # no JUMPDEST at 0
    "jump into push data": asm(4, "JUMP", 0x5B),
    "undefined opcode": bytes([0x0C]),
    "return data out of bounds": asm(1, 0, 0, "RETURNDATACOPY"),
}


def fault_prober(faulty: list[bytes]) -> bytes:
    """A contract that CALLs each of ``faulty`` with 50,000 gas."""
    return asm(*[item for to in faulty for item in (0, 0, 0, 0, 0, to, 50_000, "CALL", "POP")], "STOP")


def spender(echo: bytes) -> bytes:
    """A contract that, holding nothing, CALLs ``echo`` with 1000 wei (the CALL fails)."""
    return asm(0, 0, 0, 0, 1000, echo, 50_000, "CALL", "POP", "STOP")


def prober(*targets: bytes) -> bytes:
    """A contract that, called with at least 2 wei, makes one call of every kind and
    returns 32 bytes ending in 11223344."""
    echo, reverter, spinner, writer, broken, doomed = targets
    data = returning(ECHO) + REVERTER  # init codes, copied from the code into memory

    def program(echo_init_at: int, reverter_at: int) -> bytes:
        def call(opcode: str, to: bytes, gas: int, value: int | None = None) -> list:
            items: list = [0, 0, 4, 28]  # no return area; input: memory[28:32]
            if value is not None:
                items.append(value)
            return [*items, to, gas, opcode, "POP"]

        echo_init = word2(len(returning(ECHO)))
        return asm(
            0x11223344, 0, "MSTORE",
            *call("STATICCALL", echo, 50_000),
            *call("DELEGATECALL", echo, 50_000),
            *call("CALLCODE", echo, 50_000, 1),
            *call("CALL", echo, 50_000, 1),
            *call("CALL", reverter, 50_000, 0),
            *call("CALL", spinner, 5_000, 0),
            *call("STATICCALL", writer, 50_000),
            *call("CALL", broken, 50_000, 0),
            *call("STATICCALL", (2).to_bytes(20, "big"), 50_000),  # the sha256 precompile
            echo_init, word2(echo_init_at), 64, "CODECOPY",
            echo_init, 64, 0, "CREATE", "POP",
            SALT, echo_init, 64, 0, "CREATE2", "POP",
            word2(len(REVERTER)), word2(reverter_at), 64, "CODECOPY",
            word2(len(REVERTER)), 64, 0, "CREATE", "POP",  # init code that reverts
            *call("CALL", doomed, 50_000, 0),
            32, 0, "RETURN",
        )  # fmt: skip

    length = len(program(0, 0))
    return program(length, length + len(returning(ECHO))) + data


def bytecode_workload() -> tuple[list[tuple[str, dict]], dict[str, bytes]]:
    """The tracer's transactions, nonce 0 on, as (name, transaction fields), and the
    addresses of the contracts they deploy, by name."""
    sender = TRACER.address
    steps: list[tuple[str, dict]] = []
    at: dict[str, bytes] = {}

    def deploy(name: str, init: bytes, gas: int = 200_000, value: int = 0) -> bytes:
        at[name] = create_address(sender, len(steps))
        steps.append((f"deploy {name}", {"data": init, "gas": gas, "value": value}))
        return at[name]

    targets = [
        deploy(name, returning(code), value=3 if name == "doomed" else 0)
        for name, code in (
            ("echo", ECHO),
            ("reverter", REVERTER),
            ("spinner", SPINNER),
            ("writer", WRITER),
            ("broken", BROKEN),
            ("doomed", DOOMED),  # with 3 wei, which its SELFDESTRUCT hands on
        )
    ]
    probe = deploy("prober", returning(prober(*targets)), gas=1_000_000)
    steps += [
        ("call prober", {"to": probe, "value": 5, "gas": 2_000_000}),
        ("revert with a reason", {"to": at["reverter"], "gas": 100_000}),
        ("run out of gas", {"to": at["spinner"], "gas": 50_000}),
        ("create that reverts", {"data": REVERTER, "gas": 100_000}),
        ("echo", {"to": at["echo"], "data": b"hello", "gas": 100_000}),
        ("plain transfer", {"to": keccak(b"nobody")[12:], "value": 1, "gas": 21_000}),
        ("call prober again", {"to": probe, "value": 5, "gas": 2_000_000}),  # its CREATE2 collides
    ]
    spender_at = deploy("spender", returning(spender(at["echo"])))
    steps.append(("spend more than held", {"to": spender_at, "gas": 100_000}))
    faulty = [deploy(name, returning(code)) for name, code in FAULTS.items()]
    fault_probe = deploy("fault prober", returning(fault_prober(faulty)), gas=300_000)
    steps += [
        ("call fault prober", {"to": fault_probe, "gas": 1_000_000}),
        ("deploy 0xef code", {"data": asm(0xEF, 0, "MSTORE8", 1, 0, "RETURN"), "gas": 100_000}),
        ("deploy code too large", {"data": asm(24_577, 0, "RETURN"), "gas": 200_000}),
        ("deploy without gas for the code", {"data": asm(1_000, 0, "RETURN"), "gas": 120_000}),
    ]
    return steps, at


# ------------------------------------------------------------ the chains


class Side:
    """One chain, through web3."""

    def __init__(self, name: str, client: ChainClient):
        self.name = name
        self.client = client
        self.w3 = client.w3

    def request(self, method: str, *params) -> dict:
        return dict(self.w3.provider.make_request(method, list(params)))

    def result(self, method: str, *params):
        response = self.request(method, *params)
        assert "error" not in response, f"{self.name}: {method}: {response['error']}"
        return response["result"]

    def send(self, signer: Signer, nonce: int, fields: dict) -> bytes:
        transaction = {"nonce": nonce, "chainId": self.client.chain_id, "value": 0, **FEES, **fields}
        if "to" in transaction:
            transaction["to"] = Web3.to_checksum_address(transaction["to"])
        signed = signer.account.sign_transaction(transaction)
        return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))

    def wait(self, tx_hash: bytes) -> dict:
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05))

    def trace(self, tx_hash: bytes, config: dict | None = None) -> dict:
        return self.result("debug_traceTransaction", "0x" + tx_hash.hex(), config or CALL_TRACER)


def run_workload(side: Side, artifacts, pause_sealing=None) -> dict[str, bytes]:
    """The whole workload on ``side``; returns the transaction hash of each step."""
    hashes: dict[str, bytes] = {}
    steps, _ = bytecode_workload()
    if pause_sealing is not None:
        pause_sealing(True)
    try:
        for nonce, (name, fields) in enumerate(steps):
            hashes[name] = side.send(TRACER, nonce, fields)
    finally:
        if pause_sealing is not None:
            pause_sealing(False)
    for name in hashes:
        side.wait(hashes[name])

    client = side.client
    first_block = client.w3.eth.block_number + 1
    deployment = deploy_community(client, ADMIN, CommunityConfig())
    for number in range(first_block, client.w3.eth.block_number + 1):
        for transaction in client.w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if transaction["from"] == ADMIN.address:
                hashes[f"community {transaction['nonce']}"] = bytes(transaction["hash"])
    community = Community(client, deployment)
    nonce = len(steps)
    record = community.ledger.record_readings_call([])  # a role check, then EmptyBatch
    fields = {"from": TRACER.address, "gas": 200_000, **FEES}
    hashes["record readings without the role"] = side.send(
        TRACER, nonce, record.build_transaction({**fields, "nonce": nonce})
    )
    side.wait(hashes["record readings without the role"])
    grant = community.registry.grant_role(ADMIN, Role.GATEWAY, TRACER.address)
    hashes["grant the gateway role"] = bytes(grant["transactionHash"])
    hashes["record an empty batch"] = side.send(
        TRACER, nonce + 1, record.build_transaction({**fields, "nonce": nonce + 1})
    )
    side.wait(hashes["record an empty batch"])
    return hashes


@pytest.fixture(scope="module")
def embedded(artifacts):
    chain = open_embedded_chain(None, period=1)
    side = Side("embedded", chain.client(artifacts))
    faucet = chain.keyring["faucet"]
    for signer in (TRACER, ADMIN):
        side.client.transfer_ether(faucet, signer.address, 100 * ETHER)
    yield chain, side
    chain.stop()


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return "result" in json.loads(response.read())
    except OSError:
        return False


def start_anvil() -> tuple[subprocess.Popen, str]:
    """anvil (London rules) on a free port of 127.0.0.1; another port is tried when the
    picked one is taken meanwhile."""
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen(
            [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--hardfork", "london", "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while process.poll() is None and not _answers(url):
            if time.monotonic() > deadline:
                stop(process)
                raise AssertionError("anvil did not answer within 30 s")
            time.sleep(0.1)
        if process.poll() is None:
            return process, url
    raise AssertionError("anvil exited at start three times")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def anvil(artifacts):
    if not ANVIL.exists():
        pytest.skip("anvil is not installed (npm ci)")
    process, url = start_anvil()
    try:
        side = Side("anvil", ChainClient.connect(url, artifacts))
        funder = Signer.from_key("anvil", ANVIL_KEY)
        for signer in (TRACER, ADMIN):
            side.client.transfer_ether(funder, signer.address, 100 * ETHER)
        yield side
    finally:
        stop(process)


@pytest.fixture(scope="module")
def workloads(embedded, anvil, artifacts):
    """The workload's transaction hashes on the embedded node and on anvil."""
    chain, ours = embedded

    def pause_sealing(paused: bool) -> None:
        chain.node.sealing_enabled = not paused

    return run_workload(ours, artifacts, pause_sealing), run_workload(anvil, artifacts)


# ------------------------------------------------------------------- tests

# anvil's errors of a CALL or CREATE refused before any message starts
ANVIL_REFUSALS = {"CreateCollision", "insufficient balance for transfer"}


def as_anvil_would_compare(frame: dict, top: bool = True) -> dict:
    """``frame`` without what anvil reports differently from geth 1.13.15 (and this node):
    the top frame's ``gas`` (anvil gives the gas left after the intrinsic gas, geth the
    transaction's gas limit), frames of a CALL or CREATE refused before it starts a message
    (value above the caller's balance, an address collision: anvil shows one, as geth 1.14
    does; py-evm starts no message, and geth 1.13.15 shows none either), and the wording of
    errors, of which only the presence is kept: anvil names several by revm's own enum
    (``StackUnderflow``, ``Out of stack``, ``OutOfOffset``, ``StateChangeDuringStaticCall``,
    ``CreateContractSizeLimit``...) where geth has a text, and the texts are checked against
    geth's and spelled out in ``test_errors_are_worded_as_geth_words_them``."""
    compared = {key: value for key, value in frame.items() if not (top and key == "gas")}
    if "error" in compared:
        compared["error"] = True
    calls = [
        as_anvil_would_compare(call, top=False)
        for call in frame.get("calls", ())
        if call.get("error") not in ANVIL_REFUSALS
    ]
    compared.pop("calls", None)
    if calls:
        compared["calls"] = calls
    return compared


def test_every_trace_equals_anvils(embedded, anvil, workloads):
    _, ours = embedded
    our_hashes, anvil_hashes = workloads
    assert our_hashes.keys() == anvil_hashes.keys()
    for name in our_hashes:
        mine, theirs = ours.trace(our_hashes[name]), anvil.trace(anvil_hashes[name])
        assert as_anvil_would_compare(mine) == as_anvil_would_compare(theirs), name
        assert mine["gas"] == hex(ours.w3.eth.get_transaction(our_hashes[name])["gas"]), name


def test_the_prober_shows_every_kind_of_frame(embedded, workloads):
    _, ours = embedded
    hashes, _ = workloads
    receipt = ours.wait(hashes["call prober"])
    assert receipt["transactionIndex"] > 0, "traced behind earlier transactions of its block"
    trace = ours.trace(hashes["call prober"])
    _, at = bytecode_workload()
    probe = at["prober"]
    echo, reverter, spinner, writer, broken, doomed = (
        "0x" + at[name].hex() for name in ("echo", "reverter", "spinner", "writer", "broken", "doomed")
    )
    assert trace["type"] == "CALL" and trace["from"] == TRACER.address.lower()
    assert trace["to"] == "0x" + probe.hex() and trace["value"] == "0x5"
    assert trace["gas"] == hex(2_000_000) and int(trace["gasUsed"], 16) == receipt["gasUsed"]
    assert trace["output"] == "0x" + (0x11223344).to_bytes(32, "big").hex()
    calls = trace["calls"]
    assert [(call["type"], call.get("to"), call.get("error")) for call in calls] == [
        ("STATICCALL", echo, None),
        ("DELEGATECALL", echo, None),
        ("CALLCODE", echo, None),
        ("CALL", echo, None),
        ("CALL", reverter, "execution reverted"),
        ("CALL", spinner, "out of gas"),
        ("STATICCALL", writer, "write protection"),
        ("CALL", broken, "invalid opcode: INVALID"),
        ("STATICCALL", "0x" + "00" * 19 + "02", None),
        ("CREATE", "0x" + create_address(probe, 1).hex(), None),
        ("CREATE2", "0x" + create2_address(probe, SALT, returning(ECHO)).hex(), None),
        ("CREATE", None, "execution reverted"),
        ("CALL", doomed, None),
    ]
    static, delegate, callcode, plain, reverted, starved = calls[:6]
    assert "value" not in static and static["gas"] == hex(50_000)
    assert static["input"] == static["output"] == "0x11223344"
    assert delegate["from"] == trace["to"] and delegate["value"] == "0x5"  # its caller's value, as geth
    assert callcode["value"] == plain["value"] == "0x1" and plain["gas"] == hex(50_000 + 2_300)
    assert reverted["revertReason"] == REASON and reverted["output"] == "0x" + _REVERT_DATA.hex()
    assert starved["gasUsed"] == starved["gas"] == hex(5_000) and "output" not in starved
    assert calls[9]["output"] == calls[10]["output"] == "0x" + ECHO.hex()  # the code a CREATE deployed
    assert calls[9]["input"] == "0x" + returning(ECHO).hex()
    assert calls[11]["revertReason"] == REASON
    assert calls[12]["calls"] == [
        {
            "type": "SELFDESTRUCT",
            "from": doomed,
            "to": "0x" + probe.hex(),
            "value": "0x3",
            "gas": "0x0",
            "gasUsed": "0x0",
            "input": "0x",
        }
    ]


def test_top_frames_of_failed_and_plain_transactions(embedded, workloads):
    _, ours = embedded
    hashes, _ = workloads
    for name in hashes:  # the top frame's gasUsed is the receipt's
        assert int(ours.trace(hashes[name])["gasUsed"], 16) == ours.wait(hashes[name])["gasUsed"], name
    reverted = ours.trace(hashes["revert with a reason"])
    assert reverted["error"] == "execution reverted" and reverted["revertReason"] == REASON
    starved = ours.trace(hashes["run out of gas"])
    assert starved["error"] == "out of gas" and starved["gasUsed"] == hex(50_000) == starved["gas"]
    failed_create = ours.trace(hashes["create that reverts"])
    assert failed_create["type"] == "CREATE" and "to" not in failed_create
    assert ours.trace(hashes["echo"])["output"] == "0x" + b"hello".hex()
    transfer = ours.trace(hashes["plain transfer"])
    assert transfer["gasUsed"] == hex(21_000) and "output" not in transfer and "calls" not in transfer
    deployed = ours.trace(hashes["community 0"])
    assert deployed["type"] == "CREATE" and deployed["to"] == "0x" + create_address(ADMIN.address, 0).hex()
    unauthorised = ours.trace(hashes["record readings without the role"])
    assert unauthorised["error"] == "execution reverted"
    assert "revertReason" not in unauthorised  # a custom error, AccessControlUnauthorizedAccount
    assert [call["type"] for call in unauthorised["calls"]] == ["STATICCALL"]  # registry.hasRole
    again = ours.trace(hashes["call prober again"])  # CREATE2 collides: all its gas is gone
    assert again["error"] == "out of gas" and "CREATE2" not in [call["type"] for call in again["calls"]]
    assert "calls" not in ours.trace(hashes["spend more than held"])  # no message was started


def test_errors_are_worded_as_geth_words_them(embedded, workloads):
    _, ours = embedded
    hashes, _ = workloads
    errors = [call["error"] for call in ours.trace(hashes["call fault prober"])["calls"]]
    assert errors == [
        "stack underflow (0 <=> 2)",
        "stack underflow (0 <=> 1)",
        "stack limit reached 1024 (1023)",
        "invalid jump destination",
        "invalid jump destination",
        "invalid opcode: opcode 0xc not defined",
        "return data out of bounds",
    ]
    for name, error in (
        ("deploy 0xef code", "invalid code: must not begin with 0xef"),
        ("deploy code too large", "max code size exceeded"),
        ("deploy without gas for the code", "contract creation code storage out of gas"),
    ):
        trace = ours.trace(hashes[name])
        assert trace["error"] == error and "to" not in trace and "output" not in trace, name


def test_options_and_errors(embedded, workloads):
    _, ours = embedded
    hashes, _ = workloads
    tx_hash = "0x" + hashes["call prober"].hex()
    full = ours.trace(hashes["call prober"])
    assert ours.result("debug_traceTransaction", tx_hash) == full  # no config: the callTracer too
    top = ours.trace(hashes["call prober"], {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}})
    assert top == {key: value for key, value in full.items() if key != "calls"}

    unknown = ours.request("debug_traceTransaction", "0x" + "ab" * 32, CALL_TRACER)["error"]
    assert unknown == {"code": -32000, "message": "transaction not found"}
    other = ours.request("debug_traceTransaction", tx_hash, {"tracer": "prestateTracer"})["error"]
    assert other == {"code": -32602, "message": "only the callTracer is supported"}
    for bad in ({"tracer": "callTracer", "tracerConfig": {"onlyTopCall": "yes"}}, "callTracer"):
        assert ours.request("debug_traceTransaction", tx_hash, bad)["error"]["code"] == -32602
    call = {"from": TRACER.address, "to": "0x" + bytecode_workload()[1]["echo"].hex(), "data": "0x01"}
    other = ours.request("debug_traceCall", call, "latest", {"tracer": "4byteTracer"})["error"]
    assert other == {"code": -32602, "message": "only the callTracer is supported"}
    poor = {"from": "0x" + keccak(b"poor")[12:].hex(), "to": call["to"], "value": hex(ETHER)}
    refused = ours.request("debug_traceCall", poor, "latest", CALL_TRACER)["error"]
    assert refused["code"] == -32000 and "balance" in refused["message"]  # py-evm's words, as eth_call's


def test_trace_call_equals_anvils(embedded, anvil, workloads):
    _, ours = embedded
    stranger = "0x" + keccak(b"stranger")[12:].hex()  # given the echo's code by a state override
    request = {"from": TRACER.address, "to": stranger, "data": "0xc0ffee", "gas": hex(100_000)}
    config = {**CALL_TRACER, "stateOverrides": {stranger: {"code": "0x" + ECHO.hex()}}}
    traced = ours.result("debug_traceCall", request, "latest", config)
    assert traced["output"] == "0xc0ffee" and traced["to"] == stranger and traced["gas"] == hex(100_000)
    assert as_anvil_would_compare(traced) == as_anvil_would_compare(
        anvil.result("debug_traceCall", request, "latest", config)
    )

    probe = Web3.to_checksum_address(bytecode_workload()[1]["prober"])
    request = {"from": TRACER.address, "to": probe, "value": "0x5", "gas": hex(2_000_000)}
    traced = ours.result("debug_traceCall", request, "latest", CALL_TRACER)
    assert traced["gas"] == hex(2_000_000) and traced["error"] == "out of gas"  # the CREATE2 collides
    assert as_anvil_would_compare(traced) == as_anvil_would_compare(
        anvil.result("debug_traceCall", request, "latest", CALL_TRACER)
    )


def test_tracing_writes_nothing_to_the_chain_database(embedded, workloads):
    chain, ours = embedded
    hashes, _ = workloads
    store = chain.node.chain.chaindb.db.wrapped_db.kv_store
    chain.node.sealing_enabled = False
    try:
        time.sleep(1.5)  # a block being sealed is persisted by now
        with chain.node.lock:
            before = dict(store)
        for tx_hash in hashes.values():
            ours.trace(tx_hash)
        ours.result("debug_traceCall", {"from": TRACER.address, "to": TRACER.address}, "latest", CALL_TRACER)
        with chain.node.lock:
            assert dict(store) == before
    finally:
        chain.node.sealing_enabled = True


@pytest.mark.skipif(geth_executable() is None, reason="geth 1.13.15 is not built (scripts/setup.sh with Go)")
def test_geth_gives_the_same_traces_for_the_same_chain(embedded, workloads, tmp_path):
    """geth's own callTracer on the embedded chain, re-imported: every field equal."""
    chain, ours = embedded
    hashes, _ = workloads
    blocks = tmp_path / "chain.rlp"
    with chain.node.lock:
        export_chain(chain.node.chain, blocks)
    import_chain(blocks, chain.node.genesis.to_geth(), tmp_path / "geth")
    with serving(tmp_path / "geth", chain.node.genesis.chain_id) as geth:
        for name, tx_hash in hashes.items():
            theirs = geth.rpc("debug_traceTransaction", "0x" + tx_hash.hex(), CALL_TRACER)
            assert theirs == ours.trace(tx_hash), name
