// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {RegistryLookup} from "./RegistryLookup.sol";

/// @title Capacity limits: OCM bands and DSO limitations per flexibility and minute
/// @notice Two layers per flexibility and minute:
/// - the OCM band `[pMin, pMax]` (W, load convention) published by the OCM oracle;
/// - DREM-style limitations posted by the DSO, for one flexibility or for a feeder (split
///   over the feeder's flexibilities in proportion to their hardware range).
/// The band in force is the OCM band (hardware bounds where none was published)
/// intersected with the DSO limitation; if the two do not overlap, the DSO limitation
/// wins. A later publication for the same minutes replaces the earlier one. Minutes that
/// have started are history and cannot be changed.
contract CapacityLimits is CommunityRoleGuard {
    using RegistryLookup for ICommunityRegistry;

    /// @notice A band for `flexibility` over minutes `[startMinute, endMinute)`.
    struct BandRange {
        bytes32 flexibility;
        uint32 startMinute;
        uint32 endMinute;
        int64 pMinW;
        int64 pMaxW;
    }

    enum LimitationKind {
        Foreseen,
        Unforeseen
    }

    enum LimitationTarget {
        Flexibility,
        Feeder
    }

    /// @notice A DSO capacity limitation record (DREM TPS message shape).
    struct Limitation {
        LimitationTarget target;
        LimitationKind kind;
        uint32 startMinute;
        uint32 endMinute;
        bytes32 targetId;
        int64 pMinW;
        int64 pMaxW;
    }

    /// @notice Where the band in force comes from.
    enum BandSource {
        HardwareBounds,
        Ocm,
        Dso,
        OcmAndDso
    }

    /// @notice Longest minute range one band or limitation may cover (one week).
    uint32 public constant MAX_RANGE_MINUTES = uint32(CommunityTime.MINUTES_PER_WEEK);

    /// @notice Market slot length in minutes, copied from the registry.
    uint32 public immutable slotMinutes;

    // Four minutes per storage word, 64 bits each: (pMin + 2^31) << 32 | (pMax + 2^31).
    // A zero lane means "nothing published for this minute".
    mapping(bytes32 flexibility => mapping(uint256 quad => uint256 lanes)) private _ocmBands;
    mapping(bytes32 flexibility => mapping(uint256 quad => uint256 lanes)) private _dsoLimits;
    Limitation[] private _limitations;

    /// @notice Item `index` covers no minute or more than `MAX_RANGE_MINUTES`.
    error InvalidMinuteRange(uint256 index, bytes32 flexibility, uint32 startMinute, uint32 endMinute);
    /// @notice Item `index` starts before the current minute.
    error MinuteInThePast(uint256 index, bytes32 flexibility, uint32 startMinute, uint256 currentMinute);
    /// @notice Item `index` has `pMinW > pMaxW`.
    error InvertedBand(uint256 index, bytes32 flexibility, int64 pMinW, int64 pMaxW);
    /// @notice Item `index` leaves the flexibility's hardware bounds `[pLowW, pHighW]`.
    error BandOutsideHardwareBounds(
        uint256 index, bytes32 flexibility, int64 pMinW, int64 pMaxW, int64 pLowW, int64 pHighW
    );
    /// @notice Feeder flexibilities must be listed in strictly increasing id order.
    error UnsortedOrDuplicateFlexibility(uint256 index, bytes32 flexibility);
    /// @notice No limitation has id `limitationId`.
    error UnknownLimitation(uint256 limitationId);

    /// @notice The OCM oracle published a band.
    event BandPublished(
        bytes32 indexed flexibility, uint32 startMinute, uint32 endMinute, int64 pMinW, int64 pMaxW
    );
    /// @notice The DSO posted a limitation record.
    event LimitationPosted(
        uint256 indexed limitationId,
        LimitationTarget target,
        bytes32 indexed targetId,
        uint32 startMinute,
        uint32 endMinute,
        int64 pMinW,
        int64 pMaxW,
        LimitationKind kind,
        string reason
    );
    /// @notice A limitation applies `[pMinW, pMaxW]` to one flexibility.
    event FlexibilityLimited(
        uint256 indexed limitationId,
        bytes32 indexed flexibility,
        uint32 startMinute,
        uint32 endMinute,
        int64 pMinW,
        int64 pMaxW
    );

    constructor(ICommunityRegistry registry_) CommunityRoleGuard(registry_) {
        slotMinutes = registry_.slotMinutes();
    }

    // -------------------------------------------------------------- OCM bands

    /// @notice Publish OCM bands, each for one flexibility over a range of minutes.
    /// @dev Requirements: caller has the OCM oracle role; at least one band; each names an
    /// active flexibility, covers 1..MAX_RANGE_MINUTES minutes starting no earlier than the
    /// current minute, has `pMinW ≤ pMaxW` and lies inside the hardware bounds.
    function publishBands(BandRange[] calldata bands) external onlyCommunityRole(OCM_ORACLE_ROLE) {
        if (bands.length == 0) revert ICommunityErrors.EmptyBatch();
        for (uint256 i = 0; i < bands.length; ++i) {
            BandRange calldata band = bands[i];
            ICommunityRegistry.Flexibility memory flex = registry.activeFlexibility(band.flexibility);
            _checkMinuteRange(i, band.flexibility, band.startMinute, band.endMinute);
            if (band.pMinW > band.pMaxW) revert InvertedBand(i, band.flexibility, band.pMinW, band.pMaxW);
            if (band.pMinW < flex.pLowW || band.pMaxW > flex.pHighW) {
                revert BandOutsideHardwareBounds(
                    i, band.flexibility, band.pMinW, band.pMaxW, flex.pLowW, flex.pHighW
                );
            }
            _writeLanes(_ocmBands[band.flexibility], band.startMinute, band.endMinute, band.pMinW, band.pMaxW);
            emit BandPublished(band.flexibility, band.startMinute, band.endMinute, band.pMinW, band.pMaxW);
        }
    }

    // -------------------------------------------------------- DSO limitations

    /// @notice Limit one flexibility to `[pMinW, pMaxW]` over `[startMinute, endMinute)`.
    /// A one-sided limit passes the other side beyond the hardware bound (e.g. type(int64).min).
    /// @return limitationId Index of the new record.
    /// @dev Requirements: caller has the DSO role; the flexibility is active; the range
    /// covers 1..MAX_RANGE_MINUTES minutes from the current minute on; the limit, clamped to
    /// the hardware bounds, is not empty.
    function postFlexibilityLimitation(
        bytes32 flexibilityId,
        uint32 startMinute,
        uint32 endMinute,
        int64 pMinW,
        int64 pMaxW,
        LimitationKind kind,
        string calldata reason
    ) external onlyCommunityRole(DSO_ROLE) returns (uint256 limitationId) {
        ICommunityRegistry.Flexibility memory flex = registry.activeFlexibility(flexibilityId);
        _checkMinuteRange(0, flexibilityId, startMinute, endMinute);
        int64 low = _max(pMinW, flex.pLowW);
        int64 high = _min(pMaxW, flex.pHighW);
        if (low > high) revert InvertedBand(0, flexibilityId, pMinW, pMaxW);
        limitationId = _storeLimitation(
            LimitationTarget.Flexibility, flexibilityId, startMinute, endMinute, pMinW, pMaxW, kind, reason
        );
        _applyLimitation(limitationId, flexibilityId, startMinute, endMinute, low, high);
    }

    /// @notice Limit the total power of a feeder's flexibilities to `[pMinW, pMaxW]`.
    /// The total is split over `flexibilityIds` in proportion to each one's hardware range
    /// (DREM's fairness filter): flexibility i gets `pLow_i + (P − ΣpLow) · range_i / Σrange`
    /// for each side P, clamped to its hardware bounds, the upper side rounded down and the
    /// lower side rounded up so the shares never exceed the feeder limit.
    /// @return limitationId Index of the new record.
    /// @dev Requirements: caller has the DSO role; `flexibilityIds` non-empty, strictly
    /// increasing and all active; range as for `postFlexibilityLimitation`; `pMinW ≤ pMaxW`.
    function postFeederLimitation(
        bytes32 feederId,
        bytes32[] calldata flexibilityIds,
        uint32 startMinute,
        uint32 endMinute,
        int64 pMinW,
        int64 pMaxW,
        LimitationKind kind,
        string calldata reason
    ) external onlyCommunityRole(DSO_ROLE) returns (uint256 limitationId) {
        if (flexibilityIds.length == 0) revert ICommunityErrors.EmptyBatch();
        _checkMinuteRange(0, feederId, startMinute, endMinute);
        if (pMinW > pMaxW) revert InvertedBand(0, feederId, pMinW, pMaxW);

        uint256 count = flexibilityIds.length;
        int256[] memory lows = new int256[](count);
        int256[] memory highs = new int256[](count);
        int256 sumLow;
        int256 sumRange;
        for (uint256 i = 0; i < count; ++i) {
            if (i > 0 && flexibilityIds[i] <= flexibilityIds[i - 1]) {
                revert UnsortedOrDuplicateFlexibility(i, flexibilityIds[i]);
            }
            ICommunityRegistry.Flexibility memory flex = registry.activeFlexibility(flexibilityIds[i]);
            lows[i] = flex.pLowW;
            highs[i] = flex.pHighW;
            sumLow += flex.pLowW;
            sumRange += int256(flex.pHighW) - flex.pLowW;
        }

        limitationId = _storeLimitation(
            LimitationTarget.Feeder, feederId, startMinute, endMinute, pMinW, pMaxW, kind, reason
        );
        for (uint256 i = 0; i < count; ++i) {
            int256 range = highs[i] - lows[i];
            int256 high = _shareOf(pMaxW, sumLow, sumRange, lows[i], range, false);
            int256 low = _shareOf(pMinW, sumLow, sumRange, lows[i], range, true);
            _applyLimitation(
                limitationId, flexibilityIds[i], startMinute, endMinute, int64(low), int64(high)
            );
        }
    }

    /// @notice The limitation record `limitationId` (its reason is in `LimitationPosted`).
    function limitation(uint256 limitationId) external view returns (Limitation memory) {
        if (limitationId >= _limitations.length) revert UnknownLimitation(limitationId);
        return _limitations[limitationId];
    }

    /// @notice Number of limitation records posted.
    function limitationCount() external view returns (uint256) {
        return _limitations.length;
    }

    // ------------------------------------------------------------------ views

    /// @notice The band in force for `flexibilityId` at `minute`.
    /// @return pMinW Lower bound in W.
    /// @return pMaxW Upper bound in W.
    /// @return source Whether it comes from hardware bounds, the OCM, the DSO or both.
    function bandAt(bytes32 flexibilityId, uint32 minute)
        external
        view
        returns (int64 pMinW, int64 pMaxW, BandSource source)
    {
        return _bandInForce(registry.flexibility(flexibilityId), flexibilityId, minute);
    }

    /// @notice The tightest band in force over market `slot` (its minutes are
    /// `[slot · slotMinutes, (slot + 1) · slotMinutes)`): the largest pMin and smallest pMax.
    /// If the bands of the slot's minutes do not overlap, `pMinW > pMaxW`: no constant
    /// power is allowed over the whole slot.
    /// @return pMinW Largest lower bound over the slot's minutes, in W.
    /// @return pMaxW Smallest upper bound over the slot's minutes, in W.
    /// @return published True when every minute of the slot has an OCM band or DSO limit.
    function tightestBand(bytes32 flexibilityId, uint32 slot)
        external
        view
        returns (int64 pMinW, int64 pMaxW, bool published)
    {
        ICommunityRegistry.Flexibility memory flex = registry.flexibility(flexibilityId);
        pMinW = type(int64).min;
        pMaxW = type(int64).max;
        published = true;
        uint256 first = CommunityTime.slotStartMinute(slot, slotMinutes);
        for (uint256 minute = first; minute < first + slotMinutes; ++minute) {
            (int64 low, int64 high, BandSource source) = _bandInForce(flex, flexibilityId, minute);
            pMinW = _max(pMinW, low);
            pMaxW = _min(pMaxW, high);
            published = published && source != BandSource.HardwareBounds;
        }
    }

    // -------------------------------------------------------------- internals

    /// @dev Item `index` (id `id`) must cover 1..MAX_RANGE_MINUTES minutes from the current one on.
    function _checkMinuteRange(uint256 index, bytes32 id, uint32 startMinute, uint32 endMinute) private view {
        if (endMinute <= startMinute || endMinute - startMinute > MAX_RANGE_MINUTES) {
            revert InvalidMinuteRange(index, id, startMinute, endMinute);
        }
        uint256 currentMinute = CommunityTime.currentMinute();
        if (startMinute < currentMinute) revert MinuteInThePast(index, id, startMinute, currentMinute);
    }

    function _storeLimitation(
        LimitationTarget target,
        bytes32 targetId,
        uint32 startMinute,
        uint32 endMinute,
        int64 pMinW,
        int64 pMaxW,
        LimitationKind kind,
        string calldata reason
    ) private returns (uint256 limitationId) {
        limitationId = _limitations.length;
        _limitations.push(
            Limitation({
                target: target,
                kind: kind,
                startMinute: startMinute,
                endMinute: endMinute,
                targetId: targetId,
                pMinW: pMinW,
                pMaxW: pMaxW
            })
        );
        emit LimitationPosted(limitationId, target, targetId, startMinute, endMinute, pMinW, pMaxW, kind, reason);
    }

    function _applyLimitation(
        uint256 limitationId,
        bytes32 flexibilityId,
        uint32 startMinute,
        uint32 endMinute,
        int64 pMinW,
        int64 pMaxW
    ) private {
        _writeLanes(_dsoLimits[flexibilityId], startMinute, endMinute, pMinW, pMaxW);
        emit FlexibilityLimited(limitationId, flexibilityId, startMinute, endMinute, pMinW, pMaxW);
    }

    /// @dev One side of a feeder limit for one flexibility (see `postFeederLimitation`).
    function _shareOf(int64 total, int256 sumLow, int256 sumRange, int256 low, int256 range, bool roundUp)
        private
        pure
        returns (int256 share)
    {
        int256 high = low + range;
        if (sumRange == 0) return low;
        int256 spare = int256(total) - sumLow;
        if (spare <= 0) return low;
        int256 numerator = spare * range;
        share = low + (roundUp ? (numerator + sumRange - 1) / sumRange : numerator / sumRange);
        if (share > high) share = high;
    }

    /// @dev Write the encoded band into every minute lane of `[startMinute, endMinute)`.
    function _writeLanes(
        mapping(uint256 => uint256) storage lanes,
        uint256 startMinute,
        uint256 endMinute,
        int64 pMinW,
        int64 pMaxW
    ) private {
        uint256 encoded = (uint256(int256(pMinW) + 2 ** 31) << 32) | uint256(int256(pMaxW) + 2 ** 31);
        uint256 everyLane = encoded * 0x0000000000000001000000000000000100000000000000010000000000000001;
        for (uint256 quad = startMinute / 4; quad * 4 < endMinute; ++quad) {
            uint256 firstLane = startMinute > quad * 4 ? startMinute - quad * 4 : 0;
            uint256 endLane = endMinute - quad * 4 < 4 ? endMinute - quad * 4 : 4;
            if (firstLane == 0 && endLane == 4) {
                lanes[quad] = everyLane;
            } else {
                uint256 mask = ((uint256(1) << (64 * (endLane - firstLane))) - 1) << (64 * firstLane);
                lanes[quad] = (lanes[quad] & ~mask) | (everyLane & mask);
            }
        }
    }

    function _lane(uint256 lanes, uint256 minute) private pure returns (uint64) {
        return uint64(lanes >> (64 * (minute % 4)));
    }

    function _decode(uint64 lane) private pure returns (int64 pMinW, int64 pMaxW) {
        pMinW = int64(int256(uint256(lane >> 32)) - 2 ** 31);
        pMaxW = int64(int256(uint256(uint32(lane))) - 2 ** 31);
    }

    function _bandInForce(ICommunityRegistry.Flexibility memory flex, bytes32 flexibilityId, uint256 minute)
        private
        view
        returns (int64 pMinW, int64 pMaxW, BandSource source)
    {
        uint64 ocmLane = _lane(_ocmBands[flexibilityId][minute / 4], minute);
        uint64 dsoLane = _lane(_dsoLimits[flexibilityId][minute / 4], minute);
        (pMinW, pMaxW, source) = (flex.pLowW, flex.pHighW, BandSource.HardwareBounds);
        if (ocmLane != 0) {
            (pMinW, pMaxW) = _decode(ocmLane);
            source = BandSource.Ocm;
        }
        if (dsoLane != 0) {
            (int64 dsoMin, int64 dsoMax) = _decode(dsoLane);
            (int64 low, int64 high) = (_max(pMinW, dsoMin), _min(pMaxW, dsoMax));
            (pMinW, pMaxW) = low <= high ? (low, high) : (dsoMin, dsoMax);
            source = source == BandSource.Ocm ? BandSource.OcmAndDso : BandSource.Dso;
        }
    }

    function _max(int64 a, int64 b) private pure returns (int64) {
        return a > b ? a : b;
    }

    function _min(int64 a, int64 b) private pure returns (int64) {
        return a < b ? a : b;
    }
}
