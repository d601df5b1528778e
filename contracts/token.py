"""Typed binding of ``CommunityToken`` (ERC-20, 18 decimals): amounts in tokens (``Decimal``)."""

from __future__ import annotations

from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.binding import ContractBinding
from contracts.client import Signer

MAX_ALLOWANCE = 2**256 - 1


class Token(ContractBinding):
    """``CommunityToken``: the community's money."""

    CONTRACT = "CommunityToken"

    def mint_call(self, to: str, tokens: Decimal | float | str) -> ContractFunction:
        return self._function("mint", to, units.tokens_to_units(tokens))

    def mint(self, operator: Signer, to: str, tokens: Decimal | float | str) -> TxReceipt:
        return self._transact(operator, self.mint_call(to, tokens))

    def approve_call(self, spender: str, tokens: Decimal | float | str | None = None) -> ContractFunction:
        """Allow ``spender`` to take ``tokens`` (unlimited when None)."""
        amount = MAX_ALLOWANCE if tokens is None else units.tokens_to_units(tokens)
        return self._function("approve", spender, amount)

    def approve(self, holder: Signer, spender: str, tokens: Decimal | float | str | None = None) -> TxReceipt:
        return self._transact(holder, self.approve_call(spender, tokens))

    def transfer_call(self, to: str, tokens: Decimal | float | str) -> ContractFunction:
        return self._function("transfer", to, units.tokens_to_units(tokens))

    def transfer(self, holder: Signer, to: str, tokens: Decimal | float | str) -> TxReceipt:
        return self._transact(holder, self.transfer_call(to, tokens))

    def balance_units(self, account: str) -> int:
        """Balance in the smallest token unit."""
        return self._view("balanceOf", account)

    def balance(self, account: str) -> Decimal:
        """Balance in tokens."""
        return units.units_to_tokens(self.balance_units(account))

    def allowance_units(self, owner: str, spender: str) -> int:
        return self._view("allowance", owner, spender)
