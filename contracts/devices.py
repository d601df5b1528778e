"""Typed binding of ``DeviceStates``: what a flexibility's owner reports about its device (an EV
charger: car plugged in, energy it still wants; a battery: capacity, stored energy, reserve), so
the OCM relies on the flexibility only as far as the device can follow. Energies in kWh (whole
Wh on chain), times in UTC Unix seconds; the rules (who may report, what each kind reports) are
in the contract."""

from __future__ import annotations

import math
from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.binding import ContractBinding
from contracts.client import Signer
from contracts.events import ChainEvent, EventFollower

MAX_WH = 2**64 - 1  # the contract's uint64


@dataclass(frozen=True)
class DeviceReport:
    """The state of flexibility ``flex_id``'s device as ``owner`` reported it at ``time`` (UTC
    Unix seconds, block time): an EV charger's ``plugged`` and ``energy_need_kwh``, a battery's
    ``stored_kwh``, ``capacity_kwh`` and ``reserve_kwh``."""

    flex_id: str
    owner: str
    time: int
    plugged: bool
    energy_need_kwh: float = 0.0
    stored_kwh: float = 0.0
    capacity_kwh: float = 0.0
    reserve_kwh: float = 0.0


def energy_to_wh(kwh: float, what: str) -> int:
    """A reported energy in kWh → whole Wh; ``ValueError`` (naming ``what``) unless it is a
    finite number ≥ 0 that fits the contract's uint64."""
    try:
        number = None if isinstance(kwh, (bool, str, bytes)) else float(kwh)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise units.UnitError(f"{what} must be a finite number of kWh, got {kwh!r}")
    if number < 0:
        raise units.UnitError(f"{what} must be ≥ 0 kWh, got {kwh!r}")
    wh = units.kwh_to_wh(number)
    if wh > MAX_WH:
        raise units.UnitError(f"{what} of {kwh!r} kWh is too large for the chain (at most {MAX_WH} Wh)")
    return wh


class DeviceStates(ContractBinding):
    """``DeviceStates``: the latest device-state report per flexibility, by its owner."""

    CONTRACT = "DeviceStates"

    def report_call(
        self,
        flex_id: str,
        *,
        plugged: bool,
        energy_need_kwh: float = 0.0,
        stored_kwh: float = 0.0,
        capacity_kwh: float = 0.0,
        reserve_kwh: float = 0.0,
    ) -> ContractFunction:
        """The unsigned report; ``ValueError`` for an energy that is negative, not finite or too
        large (checked here, before anything is sent)."""
        if not isinstance(plugged, bool):
            raise ValueError(f"plugged must be True or False, got {plugged!r}")
        return self._function(
            "report",
            units.encode_id(flex_id),
            plugged,
            energy_to_wh(energy_need_kwh, "energy_need_kwh"),
            energy_to_wh(stored_kwh, "stored_kwh"),
            energy_to_wh(capacity_kwh, "capacity_kwh"),
            energy_to_wh(reserve_kwh, "reserve_kwh"),
        )

    def report(
        self,
        owner: Signer,
        flex_id: str,
        *,
        plugged: bool,
        energy_need_kwh: float = 0.0,
        stored_kwh: float = 0.0,
        capacity_kwh: float = 0.0,
        reserve_kwh: float = 0.0,
    ) -> TxReceipt:
        """Report the state of ``flex_id``'s device now, signed by its ``owner`` (replaces the
        previous report). An EV charger reports ``plugged`` and ``energy_need_kwh`` (its battery
        fields must be 0), a battery ``capacity_kwh`` (> 0), ``stored_kwh`` and ``reserve_kwh``
        (neither above the capacity)."""
        call = self.report_call(
            flex_id,
            plugged=plugged,
            energy_need_kwh=energy_need_kwh,
            stored_kwh=stored_kwh,
            capacity_kwh=capacity_kwh,
            reserve_kwh=reserve_kwh,
        )
        return self._transact(owner, call)

    def state_of(self, flex_id: str) -> DeviceReport | None:
        """The latest report on ``flex_id`` (None when it was never reported)."""
        state = self._view("stateOf", units.encode_id(flex_id))
        owner, time, plugged, need, stored, capacity, reserve = state
        if time == 0:
            return None
        return DeviceReport(
            flex_id=flex_id,
            owner=to_checksum_address(owner),
            time=time,
            plugged=plugged,
            energy_need_kwh=units.wh_to_kwh(need),
            stored_kwh=units.wh_to_kwh(stored),
            capacity_kwh=units.wh_to_kwh(capacity),
            reserve_kwh=units.wh_to_kwh(reserve),
        )

    def reports_in(self, receipt: TxReceipt) -> list[DeviceReport]:
        """The reports a transaction made, in log order."""
        return [_reported(event) for event in self._receipt_events(("DeviceStateReported",), receipt)]

    def follow_reports(self, from_block: int) -> EventFollower[DeviceReport]:
        """Every report from ``from_block`` on, in chain order (for each flexibility the latest
        one is its state)."""
        return self._follower(("DeviceStateReported",), from_block, _reported)


def _reported(event: ChainEvent) -> DeviceReport:
    args = event.args
    return DeviceReport(
        flex_id=units.decode_id(args["flexibility"]),
        owner=to_checksum_address(args["owner"]),
        time=args["time"],
        plugged=args["plugged"],
        energy_need_kwh=units.wh_to_kwh(args["energyNeedWh"]),
        stored_kwh=units.wh_to_kwh(args["storedWh"]),
        capacity_kwh=units.wh_to_kwh(args["capacityWh"]),
        reserve_kwh=units.wh_to_kwh(args["reserveWh"]),
    )
