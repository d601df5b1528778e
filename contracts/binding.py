"""The base of the typed contract bindings: one deployed contract behind a ``ChainClient``.

A binding turns Python values (kW, Unix seconds, human ids) into a contract call and the
chain's answer into dataclasses; each state-changing function comes as ``name_call(...)``
(the unsigned call, for batching with ``ChainClient.transact_all``) and ``name(signer,
...)`` (signed, sent and waited for). Raw web3 access stays inside the bindings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from web3.contract.contract import Contract, ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from contracts.client import ChainClient, Signer
from contracts.events import ChainEvent, EventFollower

T = TypeVar("T")


class ContractBinding:
    """One deployed contract (``CONTRACT`` names its artifact) at ``address``."""

    CONTRACT: ClassVar[str]

    def __init__(self, client: ChainClient, address: str):
        self.client = client
        self.contract: Contract = client.contract(self.CONTRACT, address)

    @property
    def address(self) -> str:
        return self.contract.address

    def _function(self, name: str, *args: Any) -> ContractFunction:
        return getattr(self.contract.functions, name)(*args)

    def _view(self, name: str, *args: Any) -> Any:
        return self.client.call(self._function(name, *args))

    def _transact(self, signer: Signer, call: ContractFunction) -> TxReceipt:
        return self.client.transact(call, signer)

    def _logs(self, name: str, receipt: TxReceipt) -> list[dict]:
        """The decoded ``name`` events of this contract in ``receipt``."""
        return self.client.events(self.contract, name, receipt)

    def _receipt_events(self, event_names: tuple[str, ...], receipt: TxReceipt) -> list[ChainEvent]:
        """The ``event_names`` events of this contract in ``receipt``, in log order."""
        found = []
        for name in event_names:
            for entry in getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD):
                found.append(
                    ChainEvent(
                        name=name,
                        args=dict(entry["args"]),
                        block_number=entry["blockNumber"],
                        log_index=entry["logIndex"],
                        transaction_hash=bytes(entry["transactionHash"]),
                    )
                )
        return sorted(found, key=lambda event: event.log_index)

    def _follower(
        self,
        event_names: tuple[str, ...],
        from_block: int,
        decode: Callable[[ChainEvent], T],
        many: bool = False,
    ) -> EventFollower[T]:
        """A follower of ``event_names``; with ``many``, ``decode`` returns a list of items per event."""
        return EventFollower(self.client, self.contract, event_names, from_block, decode, many=many)
