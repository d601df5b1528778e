"""Transactions the members sign themselves: prepared here (unsigned, with nonce, fees and
gas, after a dry run that turns a contract's refusal into a problem before anything is
signed), signed in the member's wallet, relayed here to the chain.

The relay only forwards transactions to the community's own contracts; it cannot change a
signed transaction, so it holds no authority of its own.
"""

from __future__ import annotations

from typing import Any

import rlp
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from contracts.client import ChainClient, ChainError, ContractRevert
from gateway.api.models import Prepared, TransactionStatus, UnsignedTransaction
from gateway.api.problems import Problem

FIELDS = ("to", "data", "value", "gas", "nonce", "maxFeePerGas", "maxPriorityFeePerGas", "chainId")


def prepared(
    client: ChainClient, calls: list[Any], sender: str, summary: str, later_gas: int = 200_000
) -> Prepared:
    """Unsigned transactions for ``calls`` from ``sender`` (consecutive nonces; only the
    first is dry-run and estimated, as the later ones may depend on it: they get ``later_gas``)."""
    transactions = []
    for position, call in enumerate(calls):
        if position == 0:
            transaction = client.unsigned_transaction(call, sender)
        else:
            previous = transactions[-1]
            transaction = dict(
                call.build_transaction(
                    {
                        "from": sender,
                        "chainId": previous["chainId"],
                        "nonce": previous["nonce"] + 1,
                        "gas": later_gas,
                        "maxFeePerGas": previous["maxFeePerGas"],
                        "maxPriorityFeePerGas": previous["maxPriorityFeePerGas"],
                    }
                )
            )
            transaction.setdefault("value", 0)
        transactions.append(transaction)
    return Prepared(
        transactions=[
            UnsignedTransaction(**{key: _json(transaction[key]) for key in FIELDS})
            for transaction in transactions
        ],
        summary=summary,
    )


def _json(value: Any) -> Any:
    if isinstance(value, bytes | HexBytes):
        return "0x" + bytes(value).hex()
    return value


def relay(client: ChainClient, raw_hex: str, allowed: set[str]) -> str:
    """Send a signed transaction to one of the ``allowed`` contracts; its hash."""
    try:
        raw = bytes.fromhex(raw_hex[2:])
        decoded = Account.recover_transaction(raw)
        fields = _decoded_fields(raw)
    except Exception as error:
        raise Problem(422, "Invalid request", f"raw: not a signed Ethereum transaction ({error})") from None
    to = fields.get("to")
    if not to or to_checksum_address(to) not in allowed:
        raise Problem(
            422,
            "Invalid request",
            f"raw: the transaction goes to {to or 'no address (a deployment)'}, "
            "not to one of the community's contracts",
        )
    if fields.get("chainId") not in (None, client.chain_id):
        raise Problem(
            422,
            "Invalid request",
            f"raw: chain id {fields['chainId']} is not this chain's ({client.chain_id})",
        )
    try:
        return "0x" + client.send_raw(raw, f"transaction from {decoded}").hex()
    except ChainError as error:
        raise Problem(409, "Refused by the node", str(error), "node-refusal") from None


def _decoded_fields(raw: bytes) -> dict[str, Any]:
    """``to`` and ``chainId`` of a typed (EIP-2718) or legacy transaction."""
    if raw and raw[0] <= 0x7F:
        return dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())
    to = rlp.decode(raw)[3]  # nonce, gas price, gas, to, ...
    return {"to": "0x" + to.hex() if to else None, "chainId": None}


def status(client: ChainClient, tx_hash: str) -> TransactionStatus:
    """Where the transaction ``tx_hash`` is: pending, mined (success or failed, with the
    contract's error decoded), or unknown to the node."""
    try:
        receipt = client.w3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:
        try:
            client.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return TransactionStatus(hash=tx_hash, status="unknown")
        return TransactionStatus(hash=tx_hash, status="pending")
    if receipt["status"] == 1:
        return TransactionStatus(hash=tx_hash, status="success", block=receipt["blockNumber"])
    failure = client.failure(receipt)
    error = failure.error if isinstance(failure, ContractRevert) else None
    return TransactionStatus(
        hash=tx_hash, status="failed", block=receipt["blockNumber"], error=error, detail=str(failure)
    )
