"""Typed binding of ``CapacityLimits``: the OCM oracle's bands and the DSO's limitations."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import clock, units
from contracts.binding import ContractBinding
from contracts.client import Signer
from contracts.events import ChainEvent, EventFollower


class BandSource(enum.IntEnum):
    """Where a band in force comes from (CapacityLimits.BandSource)."""

    HARDWARE_BOUNDS = 0
    OCM = 1
    DSO = 2
    OCM_AND_DSO = 3


class LimitationKind(enum.IntEnum):
    FORESEEN = 0
    UNFORESEEN = 1


class LimitationTarget(enum.IntEnum):
    FLEXIBILITY = 0
    FEEDER = 1


@dataclass(frozen=True)
class Band:
    """A band ``[p_min_kw, p_max_kw]`` for flexibility ``flex_id`` over ``[start, end)``
    (minute-aligned UTC Unix seconds). ``chain`` is the contract's ``BandRange`` (powers to
    the nearest watt; the OCM oracle rounds its bands inwards before)."""

    flex_id: str
    start: int
    end: int
    p_min_kw: float
    p_max_kw: float

    @cached_property
    def chain(self) -> tuple[bytes, int, int, int, int]:
        return (
            units.encode_id(self.flex_id),
            clock.aligned_minute(self.start),
            clock.aligned_minute(self.end),
            units.kw_to_w(self.p_min_kw),
            units.kw_to_w(self.p_max_kw),
        )


@dataclass(frozen=True)
class BandInForce:
    p_min_kw: float
    p_max_kw: float
    source: BandSource


class SlotBand(NamedTuple):
    """The tightest band over a market slot, and whether every minute of it was published."""

    p_min_kw: float
    p_max_kw: float
    published: bool


@dataclass(frozen=True)
class PublishedBand:
    """A ``BandPublished`` event: the band and the block that published it."""

    band: Band
    block_number: int


@dataclass(frozen=True)
class LimitedFlexibility:
    """A ``FlexibilityLimited`` event: a DSO limitation applies ``[p_min_kw, p_max_kw]`` to
    ``flex_id`` over ``[start, end)``."""

    limitation_id: int
    flex_id: str
    start: int
    end: int
    p_min_kw: float
    p_max_kw: float
    block_number: int


@dataclass(frozen=True)
class Limitation:
    """A DSO limitation record (powers in kW, times in Unix seconds)."""

    limitation_id: int
    target: LimitationTarget
    target_id: str
    kind: LimitationKind
    start: int
    end: int
    p_min_kw: float
    p_max_kw: float


class CapacityLimits(ContractBinding):
    """``CapacityLimits``: bands per flexibility and minute."""

    CONTRACT = "CapacityLimits"

    def publish_bands_call(self, bands: Sequence[Band]) -> ContractFunction:
        return self._function("publishBands", [band.chain for band in bands])

    def publish_bands(self, ocm: Signer, bands: Sequence[Band]) -> TxReceipt:
        return self._transact(ocm, self.publish_bands_call(bands))

    def band_at(self, flex_id: str, time: int) -> BandInForce:
        """The band in force for ``flex_id`` in the minute that contains ``time``."""
        p_min, p_max, source = self._view("bandAt", units.encode_id(flex_id), clock.minute_of(time))
        return BandInForce(units.w_to_kw(p_min), units.w_to_kw(p_max), BandSource(source))

    def tightest_band(self, flex_id: str, slot: int) -> SlotBand:
        """The tightest band in force over market ``slot``."""
        p_min, p_max, published = self._view("tightestBand", units.encode_id(flex_id), slot)
        return SlotBand(units.w_to_kw(p_min), units.w_to_kw(p_max), published)

    def post_flexibility_limitation_call(
        self,
        flex_id: str,
        start: int,
        end: int,
        p_min_kw: float,
        p_max_kw: float,
        kind: LimitationKind,
        reason: str,
    ) -> ContractFunction:
        return self._function(
            "postFlexibilityLimitation",
            units.encode_id(flex_id),
            clock.aligned_minute(start),
            clock.aligned_minute(end),
            units.kw_to_w(p_min_kw),
            units.kw_to_w(p_max_kw),
            int(kind),
            reason,
        )

    def post_feeder_limitation_call(
        self,
        feeder_id: str,
        flex_ids: Sequence[str],
        start: int,
        end: int,
        p_min_kw: float,
        p_max_kw: float,
        kind: LimitationKind,
        reason: str,
    ) -> ContractFunction:
        """Flexibility ids are sent sorted by their bytes32 form, as the contract requires."""
        return self._function(
            "postFeederLimitation",
            units.encode_id(feeder_id),
            sorted(units.encode_id(flex_id) for flex_id in flex_ids),
            clock.aligned_minute(start),
            clock.aligned_minute(end),
            units.kw_to_w(p_min_kw),
            units.kw_to_w(p_max_kw),
            int(kind),
            reason,
        )

    def limitation(self, limitation_id: int) -> Limitation:
        target, kind, start, end, target_id, p_min, p_max = self._view("limitation", limitation_id)
        return Limitation(
            limitation_id,
            LimitationTarget(target),
            units.decode_id(target_id),
            LimitationKind(kind),
            clock.minute_start(start),
            clock.minute_start(end),
            units.w_to_kw(p_min),
            units.w_to_kw(p_max),
        )

    def limitation_count(self) -> int:
        return self._view("limitationCount")

    def follow_bands(self, from_block: int) -> EventFollower[PublishedBand]:
        """Every band the OCM oracle published from ``from_block`` on."""
        return self._follower(("BandPublished",), from_block, _published_band)

    def follow_limitations(self, from_block: int) -> EventFollower[LimitedFlexibility]:
        """Every DSO limitation of a flexibility from ``from_block`` on (feeder limitations
        come as one event per flexibility they split into)."""
        return self._follower(("FlexibilityLimited",), from_block, _limited_flexibility)


def _limited_flexibility(event: ChainEvent) -> LimitedFlexibility:
    args = event.args
    return LimitedFlexibility(
        args["limitationId"],
        units.decode_id(args["flexibility"]),
        clock.minute_start(args["startMinute"]),
        clock.minute_start(args["endMinute"]),
        units.w_to_kw(args["pMinW"]),
        units.w_to_kw(args["pMaxW"]),
        event.block_number,
    )


def _published_band(event: ChainEvent) -> PublishedBand:
    args = event.args
    band = Band(
        units.decode_id(args["flexibility"]),
        clock.minute_start(args["startMinute"]),
        clock.minute_start(args["endMinute"]),
        units.w_to_kw(args["pMinW"]),
        units.w_to_kw(args["pMaxW"]),
    )
    return PublishedBand(band, event.block_number)
