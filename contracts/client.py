"""The chain client every component uses: web3, local signing, decoded contract errors.

The same client talks to the in-process chain or to any Ethereum JSON-RPC endpoint; only
the web3 provider differs. Transactions are signed locally with the sender's key (keys
never leave this process and never appear in logs or reprs); a revert is raised as
``ContractRevert`` carrying the decoded custom error (name and arguments).
"""

from __future__ import annotations

import ast
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError
from web3.logs import DISCARD
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import TxReceipt

from contracts.build import ContractArtifact

log = logging.getLogger(__name__)

GAS_MARGIN = 1.25
GAS_MARGIN_FIXED = 10_000
RECEIPT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Signer:
    """A named account that signs locally. Its key is never printed."""

    name: str
    account: LocalAccount = field(repr=False)

    @classmethod
    def from_key(cls, name: str, private_key: str | bytes) -> Signer:
        return cls(name, Account.from_key(private_key))

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Account.create())

    @property
    def address(self) -> str:
        return self.account.address

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"


class ChainError(Exception):
    """A transaction could not be sent or did not succeed."""


class ContractRevert(ChainError):
    """A contract call reverted; ``error`` names the custom error, ``args`` its fields."""

    def __init__(self, error: str, args: dict[str, Any], where: str = ""):
        self.error = error
        self.args_by_name = args
        rendered = ", ".join(f"{key}={_render(value)}" for key, value in args.items())
        prefix = f"{where} reverted: " if where else "reverted: "
        super().__init__(f"{prefix}{error}({rendered})")


def _render(value: Any) -> str:
    if isinstance(value, bytes):
        text = value.rstrip(b"\x00")
        if text and all(32 <= byte < 127 for byte in text):
            return repr(text.decode())
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) else str(value)


class ErrorDecoder:
    """Maps revert data to the custom error of any known contract ABI."""

    PANIC_SELECTOR = bytes.fromhex("4e487b71")
    ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")

    def __init__(self, abis: Iterable[list]):
        self._errors: dict[bytes, dict] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") == "error":
                    self._errors[function_abi_to_4byte_selector(item)] = item

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        selector, payload = data[:4], data[4:]
        codec = Web3().codec
        if selector == self.ERROR_STRING_SELECTOR:
            return "Error", {"message": codec.decode(["string"], payload)[0]}
        if selector == self.PANIC_SELECTOR:
            return "Panic", {"code": hex(codec.decode(["uint256"], payload)[0])}
        item = self._errors.get(selector)
        if item is None:
            return "UnknownError", {"data": "0x" + data.hex()}
        types = [_abi_type(inp) for inp in item["inputs"]]
        values = [
            to_checksum_address(value) if kind == "address" else value
            for kind, value in zip(types, codec.decode(types, payload), strict=True)
        ]
        return item["name"], {inp["name"]: value for inp, value in zip(item["inputs"], values, strict=True)}


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(component) for component in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


def revert_data(error: BaseException) -> bytes | None:
    """The raw revert data inside a web3 or eth-tester exception, if there is any.

    web3 puts it in ``.data`` (hex); the in-process eth-tester provider re-raises a
    string, keeping the original bytes in the exception's context."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        data = getattr(current, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            return bytes.fromhex(data[2:])
        for candidate in (data, *getattr(current, "args", ())):
            if isinstance(candidate, str):
                candidate = _bytes_literal_in(candidate)
            if isinstance(candidate, bytes) and len(candidate) >= 4:
                return candidate
            if isinstance(candidate, BaseException):
                pending.append(candidate)
        pending.extend(e for e in (current.__context__, current.__cause__) if e is not None)
    return None


def _bytes_literal_in(text: str) -> bytes | None:
    """eth-tester reports some reverts as the repr of the data (``"b'\\x08...'"``)."""
    match = re.search(r"""b(['"]).*\1""", text, re.DOTALL)
    if match is None:
        return None
    try:
        value = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


class ChainClient:
    """web3 plus signing, nonce tracking, gas estimation and error decoding."""

    def __init__(
        self, w3: Web3, artifacts: dict[str, ContractArtifact] | None = None, confirmations: int = 0
    ):
        """``confirmations``: blocks that must follow a transaction's block before ``wait``
        returns its receipt (re-read then, so a transaction a reorganisation moved or dropped
        is waited for again); 0 returns at the first receipt, enough on a single sealer."""
        if "poa_extradata" not in w3.middleware_onion:  # clique blocks carry 97+ bytes of extraData
            w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0, name="poa_extradata")
        self.w3 = w3
        self.artifacts = dict(artifacts or {})
        self.errors = ErrorDecoder(artifact.abi for artifact in self.artifacts.values())
        self._chain_id: int | None = None
        self._names: dict[str, str] = {}
        self._nonces: dict[str, int] = {}
        self._nonce_lock = threading.Lock()
        self.confirmations = confirmations

    @classmethod
    def connect(
        cls, rpc_url: str, artifacts: dict[str, ContractArtifact] | None = None, confirmations: int = 0
    ) -> ChainClient:
        """A client for the JSON-RPC endpoint at ``rpc_url`` (``http://host:port``)."""
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
        if not w3.is_connected():
            raise ChainError(f"no Ethereum JSON-RPC node answers at {rpc_url}")
        return cls(w3, artifacts, confirmations)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.w3.eth.chain_id
        return self._chain_id

    def head_block(self) -> int:
        """The number of the newest block."""
        return self.w3.eth.block_number

    def latest_timestamp(self) -> int:
        """The timestamp (UTC Unix seconds) of the newest block: the chain's "now"."""
        return self.w3.eth.get_block("latest")["timestamp"]

    def block_interval(self) -> int:
        """Seconds between the two newest blocks (the chain's block period, roughly; 2 on a
        chain that has only its genesis)."""
        head = self.w3.eth.get_block("latest")
        if head["number"] == 0:
            return 2
        parent = self.w3.eth.get_block(head["number"] - 1)
        return max(1, int(head["timestamp"] - parent["timestamp"]))

    @staticmethod
    def events(contract: Contract, event_name: str, receipt: TxReceipt) -> list[dict]:
        """The ``event_name`` logs of ``contract`` in ``receipt``, decoded (others ignored)."""
        event = getattr(contract.events, event_name)()
        return [dict(log_entry["args"]) for log_entry in event.process_receipt(receipt, errors=DISCARD)]

    def forget_nonces(self) -> None:
        """Re-read every sender's nonce from the chain on its next transaction."""
        with self._nonce_lock:
            self._nonces.clear()

    # ----------------------------------------------------------------- contracts

    def contract(self, name: str, address: str) -> Contract:
        """The deployed contract ``name`` (an artifact of this client) at ``address``."""
        address = to_checksum_address(address)
        self._names[address] = name
        return self.w3.eth.contract(address=address, abi=self.artifacts[name].abi)

    def deploy(self, name: str, signer: Signer, *constructor_args: Any) -> Contract:
        """Deploy contract ``name`` from ``signer``; returns the contract at its address."""
        artifact = self.artifacts[name]
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.transact(factory.constructor(*constructor_args), signer, where=f"deploy {name}")
        log.info("deployed %s at %s (gas %d)", name, receipt["contractAddress"], receipt["gasUsed"])
        return self.contract(name, receipt["contractAddress"])

    # -------------------------------------------------------------- transactions

    def call(self, function: ContractFunction, block: str | int = "latest") -> Any:
        """Run a view function; reverts raise ``ContractRevert``."""
        try:
            return function.call(block_identifier=block)
        except (ContractLogicError, Web3RPCError) as error:
            raise self._revert(error, self._describe(function)) from None
        except Exception as error:
            if revert_data(error) is None:
                raise
            raise self._revert(error, self._describe(function)) from None

    def send(self, function: Any, signer: Signer, gas: int | None = None, where: str = "") -> bytes:
        """Sign and send a call to ``function`` (a contract function or constructor);
        returns the transaction hash without waiting. Gas is estimated when not given, so
        a call that would revert raises ``ContractRevert`` before anything is sent."""
        where = where or self._describe(function)
        base = {"from": signer.address, "chainId": self.chain_id}
        if gas is None:
            gas = self._estimate(function, base, where)
        fees = self.suggested_fees()  # always given: the client decides the fee, not each node
        with self._nonce_lock:
            nonce = self._next_nonce(signer.address)
            transaction = function.build_transaction({**base, "gas": gas, "nonce": nonce, **fees})
            return self._send_signed(transaction, signer, where)

    def unsigned_transaction(self, function: Any, sender: str) -> dict[str, Any]:
        """The transaction calling ``function`` from ``sender``, ready for the sender's own
        wallet to sign (EIP-1559 fields, the sender's pending nonce, estimated gas); a call
        that would revert raises ``ContractRevert`` instead."""
        where = self._describe(function)
        base = {"from": to_checksum_address(sender), "chainId": self.chain_id}
        gas = self._estimate(function, base, where)
        nonce = self.w3.eth.get_transaction_count(base["from"], "pending")
        transaction = dict(
            function.build_transaction({**base, "gas": gas, "nonce": nonce, **self.suggested_fees()})
        )
        transaction.setdefault("value", 0)
        return transaction

    def send_raw(self, raw_transaction: bytes, where: str = "transaction") -> bytes:
        """Submit a transaction signed elsewhere; the node's refusal raises ``ChainError``
        with the node's message."""
        try:
            return bytes(self.w3.eth.send_raw_transaction(raw_transaction))
        except Web3RPCError as error:
            message = error.rpc_response.get("error", {}).get("message") if error.rpc_response else None
            raise ChainError(f"{where} refused by the node: {message or error}") from None

    def failure(self, receipt: TxReceipt, where: str = "transaction") -> ChainError:
        """Why the mined transaction of ``receipt`` failed (its call replayed, error decoded)."""
        return self._replay_failure(receipt, where)

    def transact(self, function: Any, signer: Signer, gas: int | None = None, where: str = "") -> TxReceipt:
        """``send`` and wait for the receipt; a failed transaction raises ``ContractRevert``."""
        where = where or self._describe(function)
        tx_hash = self.send(function, signer, gas=gas, where=where)
        return self.wait(tx_hash, where)

    def transact_all(self, calls: Sequence[tuple[Any, Signer]], gas: int) -> list[TxReceipt]:
        """Send every ``(function, signer)`` without waiting in between (one block can hold
        them all; each sender's calls keep their order), then wait for all receipts.
        ``gas`` is given, not estimated: a call may depend on an earlier one not mined yet."""
        hashes = [
            (self.send(function, signer, gas=gas), self._describe(function)) for function, signer in calls
        ]
        return [self.wait(tx_hash, where) for tx_hash, where in hashes]

    def wait(self, tx_hash: bytes, where: str = "transaction") -> TxReceipt:
        """Wait for the receipt of ``tx_hash``; raise if it failed."""
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.05
            )
        except TimeExhausted as error:
            raise ChainError(
                f"{where}: no receipt for 0x{tx_hash.hex()} after {RECEIPT_TIMEOUT_S} s"
            ) from error
        if self.confirmations:
            receipt = self._confirmed(tx_hash, receipt, where)
        if receipt["status"] != 1:
            raise self._replay_failure(receipt, where)
        return receipt

    def _confirmed(self, tx_hash: bytes, receipt: TxReceipt, where: str) -> TxReceipt:
        """The receipt once ``confirmations`` blocks follow its block on the canonical chain."""
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.w3.eth.block_number >= receipt["blockNumber"] + self.confirmations:
                try:
                    again = self.w3.eth.get_transaction_receipt(tx_hash)
                except TransactionNotFound:  # dropped with its block: wait for it to be mined again
                    again = None
                if again is not None and again["blockHash"] == receipt["blockHash"]:
                    return again
                if again is not None:  # mined again in another block: count from there
                    receipt = again
            time.sleep(0.1)
        raise ChainError(f"{where}: 0x{tx_hash.hex()} not confirmed by {self.confirmations} blocks")

    def send_ether(self, signer: Signer, to: str, wei: int, fees: dict[str, int] | None = None) -> bytes:
        """Sign and send a plain value transfer; returns the hash without waiting.
        ``fees`` (``maxFeePerGas``, ``maxPriorityFeePerGas``) default to the node's."""
        with self._nonce_lock:
            transaction = {
                "to": to_checksum_address(to),
                "value": wei,
                "gas": 21_000,
                "nonce": self._next_nonce(signer.address),
                "chainId": self.chain_id,
                **(fees or self.suggested_fees()),
            }
            return self._send_signed(transaction, signer, f"transfer to {to}")

    def transfer_ether(self, signer: Signer, to: str, wei: int) -> TxReceipt:
        """Plain value transfer (funding accounts with gas money), waited for."""
        return self.wait(self.send_ether(signer, to, wei), f"transfer to {to}")

    def suggested_fees(self) -> dict[str, int]:
        """EIP-1559 fee fields that cover two doublings of the base fee."""
        base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": self.w3.eth.gas_price}
        tip = 1_000_000_000
        return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}

    # ---------------------------------------------------------------- internals

    def _send_signed(self, transaction: dict, signer: Signer, where: str) -> bytes:
        """Sign and submit (the caller holds the nonce lock); the node's refusal becomes
        a ``ChainError`` and the nonce is re-read next time."""
        signed = signer.account.sign_transaction(transaction)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as error:
            self._nonces.pop(signer.address, None)
            message = error.rpc_response.get("error", {}).get("message") if error.rpc_response else None
            raise ChainError(f"{where} refused by the node: {message or error}") from None
        except Exception:
            self._nonces.pop(signer.address, None)
            raise
        self._nonces[signer.address] = transaction["nonce"] + 1
        return bytes(tx_hash)

    def _estimate(self, function: Any, base: dict[str, Any], where: str) -> int:
        """Gas for ``function`` with a margin; a revert raises ``ContractRevert``."""
        try:
            estimate = function.estimate_gas(base)
        except Exception as error:
            if isinstance(error, (ContractLogicError, Web3RPCError)) or revert_data(error):
                raise self._revert(error, where) from None
            raise
        return int(estimate * GAS_MARGIN) + GAS_MARGIN_FIXED

    def _next_nonce(self, address: str) -> int:
        if address not in self._nonces:
            self._nonces[address] = self.w3.eth.get_transaction_count(address, "pending")
        return self._nonces[address]

    def _revert(self, error: BaseException, where: str) -> ChainError:
        data = revert_data(error)
        if data is None:
            return ChainError(f"{where} failed: {error}")
        name, args = self.errors.decode(data)
        return ContractRevert(name, args, where)

    def _replay_failure(self, receipt: TxReceipt, where: str) -> ChainError:
        transaction = self.w3.eth.get_transaction(receipt["transactionHash"])
        replay = {
            key: transaction[key]
            for key in ("from", "to", "data", "value")
            if transaction.get(key) is not None
        }
        if "input" in transaction and "data" not in replay:
            replay["data"] = transaction["input"]
        try:
            self.w3.eth.call(replay, block_identifier=receipt["blockNumber"] - 1)
        except Exception as error:
            return self._revert(error, where)
        return ChainError(
            f"{where}: transaction 0x{bytes(receipt['transactionHash']).hex()} failed (out of gas?)"
        )

    def _describe(self, function: Any) -> str:
        """``Contract.function`` for error messages."""
        name = getattr(function, "fn_name", None) or "constructor"
        address = getattr(function, "address", None)
        contract = self._names.get(address, address) if address else None
        return f"{contract}.{name}" if contract else str(name)
