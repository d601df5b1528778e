// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IMarketLedger} from "./IMarketLedger.sol";

/// @title Measurement ledger: per-minute meter readings of the community
/// @notice The gateway records batches of readings (P, Q, V, angle per meter and minute)
/// packed 52 bytes each (`READING_BYTES`, layout below). Each batch is emitted whole as
/// one `ReadingsRecorded` event, so every node can follow the grid state and anyone can
/// check a single reading (`decodeReadings` unpacks a batch); the active and reactive
/// energy per (meter, market slot) accumulates in one storage word, written once per run
/// of consecutive readings of the same meter and slot. A batch is atomic: one bad reading
/// rejects the whole batch, with an error that names the reading by its position in the
/// batch (`UnknownMeter` names the meter instead: every reading of that meter is refused).
///
/// Packed reading, big-endian: meter id (bytes32) | Unix minute (uint32) | P in W (int32)
/// | Q in var (int32) | V in µpu (uint32) | angle in µdeg (int32).
///
/// A meter must be active in the registry when its first reading of a slot is recorded;
/// the slot's later minutes are then taken as well, so a deregistration takes effect from
/// the meter's next slot (settlement works per slot: a meter is in a slot or it is not).
///
/// Readings of a slot are accepted until its data deadline, `dataDelayMinutes` after the
/// slot ends, and refused after it: the settlement starts at the deadline and works on data
/// that can no longer change.
contract MeasurementLedger is CommunityRoleGuard, IMarketLedger {
    /// @notice One meter reading. `minute` is the Unix minute (Unix seconds / 60).
    struct Reading {
        bytes32 meter;
        uint32 minute;
        int32 activePowerW;
        int32 reactivePowerVar;
        uint32 voltageMicroPu;
        int32 angleMicroDeg;
    }

    /// @notice What a meter's readings in one market slot add up to.
    /// @dev Packed in one storage word; `minutesSeen` bit i = minute i of the slot.
    struct SlotEnergy {
        uint64 minutesSeen;
        uint16 readings;
        int88 activeWattMinutes;
        int88 reactiveVarMinutes;
    }

    /// @notice Bytes of one packed reading.
    uint256 public constant READING_BYTES = 52;
    /// @notice Largest |P| or |Q| a reading may carry (100 MW / 100 Mvar).
    int64 public constant MAX_ABS_POWER = 100_000_000;
    /// @notice Largest voltage a reading may carry, in µpu (2 pu).
    uint32 public constant MAX_VOLTAGE_MICRO_PU = 2_000_000;
    /// @notice Largest |angle| a reading may carry, in µdeg (180°).
    int32 public constant MAX_ABS_ANGLE_MICRO_DEG = 180_000_000;

    /// @notice Longest data delay (one week).
    uint32 public constant MAX_DATA_DELAY_MINUTES = uint32(CommunityTime.MINUTES_PER_WEEK);

    /// @notice Market slot length in minutes, copied from the registry.
    uint32 public immutable slotMinutes;
    /// @notice Readings of a slot are accepted until this many minutes after it ends.
    uint32 public immutable dataDelayMinutes;

    mapping(bytes32 meter => mapping(uint32 slot => SlotEnergy)) private _slotEnergy;

    /// @notice Reading `index` repeats a (meter, minute) already recorded or earlier in the batch.
    error DuplicateReading(uint256 index, bytes32 meter, uint32 minute);
    /// @notice Reading `index` has a value outside its physical range; `field` names it.
    error ReadingOutOfRange(uint256 index, bytes32 meter, string field, int256 value);
    /// @notice Reading `index` is for a minute that has not started yet.
    error ReadingFromFuture(uint256 index, bytes32 meter, uint32 minute, uint256 currentMinute);
    /// @notice Reading `index` is for a slot whose data deadline `deadline` (Unix s) has passed.
    error ReadingPastDeadline(uint256 index, bytes32 meter, uint32 minute, uint256 deadline);
    error DataDelayTooLong(uint32 delayMinutes, uint32 maxMinutes);
    /// @notice A packed batch of `length` bytes is not a whole number of `READING_BYTES` readings.
    error MalformedBatch(uint256 length, uint256 readingBytes);

    /// @notice A batch of readings was recorded: `readings` as passed to `recordReadings`.
    event ReadingsRecorded(bytes readings);

    /// @param registry_ The community registry.
    /// @param dataDelayMinutes_ Minutes after a slot's end during which its readings are accepted.
    constructor(ICommunityRegistry registry_, uint32 dataDelayMinutes_) CommunityRoleGuard(registry_) {
        if (dataDelayMinutes_ > MAX_DATA_DELAY_MINUTES) {
            revert DataDelayTooLong(dataDelayMinutes_, MAX_DATA_DELAY_MINUTES);
        }
        slotMinutes = registry_.slotMinutes();
        dataDelayMinutes = dataDelayMinutes_;
    }

    /// @notice Record a batch of packed readings.
    /// @dev Requirements: caller has the gateway role; the batch is a non-empty whole
    /// number of readings; every reading names a meter active in the registry (or one that
    /// already has readings in the reading's slot), a minute not after the current one and
    /// of a slot whose data deadline has not passed, a (meter, minute) not recorded before,
    /// |P|, |Q| ≤ MAX_ABS_POWER, V ≤ MAX_VOLTAGE_MICRO_PU and |angle| ≤ MAX_ABS_ANGLE_MICRO_DEG.
    function recordReadings(bytes calldata readings) external onlyCommunityRole(GATEWAY_ROLE) {
        if (readings.length % READING_BYTES != 0) revert MalformedBatch(readings.length, READING_BYTES);
        uint256 count = readings.length / READING_BYTES;
        if (count == 0) revert ICommunityErrors.EmptyBatch();
        uint256 currentMinute = CommunityTime.currentMinute();
        // The run of consecutive readings of one (meter, slot) being added up, as the raw
        // SlotEnergy word (opened by reading 0, stored when the run ends).
        bytes32 meter = bytes32(0);
        uint32 slot = 0;
        uint256 deadline = 0;
        uint256 word = 0;
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 readingMeter, uint256 values) = _packedAt(readings, i);
            uint32 minute = uint32(values >> 224);
            (uint32 readingSlot, uint64 bit) = _slotAndBit(minute);
            if (i == 0 || readingMeter != meter || readingSlot != slot) {
                if (i != 0) _storeWord(_slotEnergy[meter][slot], word);
                (meter, slot) = (readingMeter, readingSlot);
                word = _loadWord(_slotEnergy[meter][slot]);
                if (uint64(word) == 0 && !registry.isActiveMeter(meter)) {
                    revert ICommunityRegistry.UnknownMeter(meter);
                }
                deadline = dataDeadline(slot);
            }
            (int32 activePowerW, int32 reactivePowerVar) = _check(i, meter, values, currentMinute, deadline);
            if (uint64(word) & bit != 0) revert DuplicateReading(i, meter, minute);
            word = _added(word, bit, activePowerW, reactivePowerVar);
        }
        _storeWord(_slotEnergy[meter][slot], word);
        emit ReadingsRecorded(readings);
    }

    /// @notice The readings of a packed batch (as in `recordReadings` and `ReadingsRecorded`).
    function decodeReadings(bytes calldata readings) external pure returns (Reading[] memory decoded) {
        if (readings.length % READING_BYTES != 0) revert MalformedBatch(readings.length, READING_BYTES);
        decoded = new Reading[](readings.length / READING_BYTES);
        for (uint256 i = 0; i < decoded.length; ++i) {
            (bytes32 meter, uint256 values) = _packedAt(readings, i);
            decoded[i] = _unpack(meter, values);
        }
    }

    /// @notice True when a reading of `meter` for `minute` is recorded.
    function hasReading(bytes32 meter, uint32 minute) public view returns (bool) {
        (uint32 slot, uint64 bit) = _slotAndBit(minute);
        return _slotEnergy[meter][slot].minutesSeen & bit != 0;
    }

    /// @notice `hasReading` for many (meter, minute) pairs at once (for the gateway).
    function hasReadings(bytes32[] calldata meters, uint32[] calldata readingMinutes)
        external
        view
        returns (bool[] memory recorded)
    {
        recorded = new bool[](meters.length);
        for (uint256 i = 0; i < meters.length; ++i) {
            recorded[i] = hasReading(meters[i], readingMinutes[i]);
        }
    }

    /// @notice Energy of `meter` in market `slot` (slot = minute / slotMinutes).
    /// @return readings Number of minutes recorded in the slot.
    /// @return activeWattMinutes Sum of P over the recorded minutes (W·min; Wh = /60).
    /// @return reactiveVarMinutes Sum of Q over the recorded minutes (var·min).
    function slotEnergy(bytes32 meter, uint32 slot)
        external
        view
        override
        returns (uint16 readings, int88 activeWattMinutes, int88 reactiveVarMinutes)
    {
        SlotEnergy memory energy = _slotEnergy[meter][slot];
        return (energy.readings, energy.activeWattMinutes, energy.reactiveVarMinutes);
    }

    /// @inheritdoc IMarketLedger
    function dataDeadline(uint32 slot) public view override returns (uint256) {
        return CommunityTime.slotEndTime(slot, slotMinutes) + CommunityTime.secondsOf(dataDelayMinutes);
    }

    /// @dev The meter id and the word of values (high 20 bytes) of reading `index` of a
    /// packed batch whose length is a multiple of READING_BYTES.
    function _packedAt(bytes calldata readings, uint256 index)
        private
        pure
        returns (bytes32 meter, uint256 values)
    {
        assembly ("memory-safe") {
            let offset := add(readings.offset, mul(index, READING_BYTES))
            meter := calldataload(offset)
            values := calldataload(add(offset, 32))
        }
    }

    /// @dev A reading from its meter id and packed values.
    function _unpack(bytes32 meter, uint256 values) private pure returns (Reading memory) {
        return Reading(
            meter,
            uint32(values >> 224),
            int32(uint32(values >> 192)),
            int32(uint32(values >> 160)),
            uint32(values >> 128),
            int32(uint32(values >> 96))
        );
    }

    /// @dev Check reading `index` of the batch (`meter` and packed `values`): its minute
    /// has started, its values are in range and its slot's data deadline has not passed.
    /// Returns its P and Q.
    function _check(uint256 index, bytes32 meter, uint256 values, uint256 currentMinute, uint256 deadline)
        private
        view
        returns (int32 activePowerW, int32 reactivePowerVar)
    {
        uint32 minute = uint32(values >> 224);
        if (minute > currentMinute) revert ReadingFromFuture(index, meter, minute, currentMinute);
        activePowerW = int32(uint32(values >> 192));
        reactivePowerVar = int32(uint32(values >> 160));
        if (activePowerW > MAX_ABS_POWER || activePowerW < -MAX_ABS_POWER) {
            revert ReadingOutOfRange(index, meter, "activePowerW", activePowerW);
        }
        if (reactivePowerVar > MAX_ABS_POWER || reactivePowerVar < -MAX_ABS_POWER) {
            revert ReadingOutOfRange(index, meter, "reactivePowerVar", reactivePowerVar);
        }
        uint32 voltageMicroPu = uint32(values >> 128);
        if (voltageMicroPu > MAX_VOLTAGE_MICRO_PU) {
            revert ReadingOutOfRange(index, meter, "voltageMicroPu", int256(uint256(voltageMicroPu)));
        }
        int32 angleMicroDeg = int32(uint32(values >> 96));
        if (angleMicroDeg > MAX_ABS_ANGLE_MICRO_DEG || angleMicroDeg < -MAX_ABS_ANGLE_MICRO_DEG) {
            revert ReadingOutOfRange(index, meter, "angleMicroDeg", angleMicroDeg);
        }
        if (block.timestamp >= deadline) revert ReadingPastDeadline(index, meter, minute, deadline);
    }

    /// @dev `word` (a raw SlotEnergy) with the reading of minute bit `bit`, P and Q added.
    /// No overflow is possible: each of the at most 64 bits is set once, so `readings` ≤ 64
    /// and |sums| ≤ 64 · MAX_ABS_POWER, far inside int88.
    function _added(uint256 word, uint256 bit, int256 activePowerW, int256 reactivePowerVar)
        private
        pure
        returns (uint256)
    {
        unchecked {
            uint256 minutesSeen = uint64(word) | bit;
            uint256 count = uint16(word >> 64) + 1;
            int256 active = int88(uint88(word >> 80)) + activePowerW;
            int256 reactive = int88(uint88(word >> 168)) + reactivePowerVar;
            return minutesSeen | (count << 64) | (uint256(uint88(int88(active))) << 80)
                | (uint256(uint88(int88(reactive))) << 168);
        }
    }

    /// @dev The storage word of `energy` (fields from the low bits: minutesSeen, readings,
    /// activeWattMinutes, reactiveVarMinutes, as Solidity packs the struct).
    function _loadWord(SlotEnergy storage energy) private view returns (uint256 word) {
        assembly ("memory-safe") {
            word := sload(energy.slot)
        }
    }

    function _storeWord(SlotEnergy storage energy, uint256 word) private {
        assembly ("memory-safe") {
            sstore(energy.slot, word)
        }
    }

    /// @dev The slot of `minute` and its bit in `SlotEnergy.minutesSeen`.
    function _slotAndBit(uint32 minute) private view returns (uint32 slot, uint64 bit) {
        slot = uint32(CommunityTime.slotOf(minute, slotMinutes));
        bit = uint64(1) << CommunityTime.minuteInSlot(minute, slotMinutes);
    }
}
