"""Typed binding of ``DynamicTariff``: the DSO's tariff per bus and hour. Prices in tokens per
kWh (``Decimal``), hours as Unix hour indices (UTC Unix seconds // 3600); the rules (posting
deadline, price cap, who is paid) are in the contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.binding import ContractBinding
from contracts.client import Signer
from contracts.events import ChainEvent, EventFollower

SECONDS_PER_HOUR = 3600


def hour_of(unix_seconds: float) -> int:
    """The Unix hour index that contains the instant ``unix_seconds``."""
    return int(unix_seconds) // SECONDS_PER_HOUR


def hour_start(hour: int) -> int:
    """Unix hour index → the UTC Unix second it starts at."""
    return hour * SECONDS_PER_HOUR


@dataclass(frozen=True)
class Tariff:
    """The DSO's tariff at ``bus`` in Unix hour ``hour``, in tokens per kWh."""

    bus: int
    hour: int
    price: Decimal

    def to_chain(self) -> tuple[int, int, int]:
        return (self.bus, self.hour, units.price_to_units_per_kwh(self.price))


class DynamicTariff(ContractBinding):
    """``DynamicTariff``: tariffs the settlement charges on metered consumption."""

    CONTRACT = "DynamicTariff"

    def post_tariffs_call(self, tariffs: Sequence[Tariff]) -> ContractFunction:
        return self._function("postTariffs", [tariff.to_chain() for tariff in tariffs])

    def post_tariffs(self, dso: Signer, tariffs: Sequence[Tariff]) -> TxReceipt:
        """Post or change ``tariffs`` (each before its hour's ``posting_deadline``)."""
        return self._transact(dso, self.post_tariffs_call(tariffs))

    def set_payee(self, dso: Signer, payee: str) -> TxReceipt:
        """Pay the tariff revenue into ``payee``'s settlement deposit from now on."""
        return self._transact(dso, self._function("setPayee", payee))

    def payee(self) -> str:
        return self._view("payee")

    def tariff_at(self, bus: int, hour: int) -> Decimal:
        """Tokens per kWh at ``bus`` in Unix hour ``hour`` (0 when none was posted)."""
        return units.units_per_kwh_to_price(self._view("tariffAt", bus, hour))

    def posting_deadline(self, hour: int) -> int:
        """Until when (UTC Unix seconds, exclusive) the tariff of ``hour`` can be posted."""
        return self._view("postingDeadline", hour)

    def max_tariff(self) -> Decimal:
        return units.units_per_kwh_to_price(self._view("MAX_TARIFF"))

    def follow_tariffs(self, from_block: int) -> EventFollower[Tariff]:
        """Every tariff posted from ``from_block`` on (a later posting for the same bus and
        hour replaces the earlier one)."""
        return self._follower(("TariffPosted",), from_block, _posted_tariff)


def _posted_tariff(event: ChainEvent) -> Tariff:
    args = event.args
    return Tariff(args["bus"], args["hour"], units.units_per_kwh_to_price(args["price"]))
