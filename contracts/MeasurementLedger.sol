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
/// A meter that measures per phase has its readings recorded by `recordPhaseReadings`
/// (event `PhaseReadingsRecorded`) as phase records of `PHASE_READING_BYTES` (101): the
/// packed reading above (the meter's totals, which the slot energy adds up) | the measured
/// phases (uint8, bit 0 = L1, bit 1 = L2, bit 2 = L3; not zero) | for L1, L2, L3 in turn:
/// P in W (int32) | Q in var (int32) | V in µpu (uint32) | angle in µdeg (int32), all zero
/// for a phase not measured. Each phase value has the range of its total. That the phases
/// add up to the totals is the gateway's check (docs/gateway.md), as the signature is.
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

    /// @notice The values of one phase of a phase record.
    struct PhaseValues {
        int32 activePowerW;
        int32 reactivePowerVar;
        uint32 voltageMicroPu;
        int32 angleMicroDeg;
    }

    /// @notice One phase record: the meter's totals, the measured phases (bit 0 = L1) and
    /// the values of L1, L2, L3 (zero for a phase not measured).
    struct PhaseReading {
        Reading reading;
        uint8 phases;
        PhaseValues[3] values;
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
    /// @notice Bytes of one phase record (a packed reading, the phase mask, 3 × 16 bytes).
    uint256 public constant PHASE_READING_BYTES = 101;
    uint8 private constant ALL_PHASES = 7;
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
    /// @notice A packed batch of `length` bytes is not a whole number of `readingBytes` readings.
    error MalformedBatch(uint256 length, uint256 readingBytes);
    /// @notice Phase record `index` names no phase, an unknown one, or has values for a
    /// phase it does not measure (`phases` is its mask).
    error MalformedPhases(uint256 index, bytes32 meter, uint8 phases);

    /// @notice A batch of readings was recorded: `readings` as passed to `recordReadings`.
    event ReadingsRecorded(bytes readings);
    /// @notice A batch of phase records was recorded: `readings` as passed to `recordPhaseReadings`.
    event PhaseReadingsRecorded(bytes readings);

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
        _recordReadings(readings, READING_BYTES);
        emit ReadingsRecorded(readings);
    }

    /// @notice Record a batch of phase records (per-phase readings, layout above).
    /// @dev Requirements: those of `recordReadings` for the totals, with `PHASE_READING_BYTES`
    /// per reading; the phase mask is 1..7, a phase not measured has all values zero, and
    /// each measured phase's values are in the range of the totals'.
    function recordPhaseReadings(bytes calldata readings) external onlyCommunityRole(GATEWAY_ROLE) {
        _recordReadings(readings, PHASE_READING_BYTES);
        emit PhaseReadingsRecorded(readings);
    }

    /// @dev Check and add up a batch of `recordBytes` records (`READING_BYTES` or
    /// `PHASE_READING_BYTES`); no access check, no event.
    function _recordReadings(bytes calldata readings, uint256 recordBytes) private {
        if (readings.length % recordBytes != 0) revert MalformedBatch(readings.length, recordBytes);
        uint256 count = readings.length / recordBytes;
        if (count == 0) revert ICommunityErrors.EmptyBatch();
        uint256 currentMinute = CommunityTime.currentMinute();
        // The run of consecutive readings of one (meter, slot) being added up, as the raw
        // SlotEnergy word (opened by reading 0, stored when the run ends).
        bytes32 meter = bytes32(0);
        uint32 slot = 0;
        uint256 deadline = 0;
        uint256 word = 0;
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 readingMeter, uint256 values) = _packedAt(readings, i * recordBytes);
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
            if (recordBytes == PHASE_READING_BYTES) _checkPhases(readings, i, meter, values);
            if (uint64(word) & bit != 0) revert DuplicateReading(i, meter, minute);
            word = _added(word, bit, activePowerW, reactivePowerVar);
        }
        _storeWord(_slotEnergy[meter][slot], word);
    }

    /// @notice The readings of a packed batch (as in `recordReadings` and `ReadingsRecorded`).
    function decodeReadings(bytes calldata readings) external pure returns (Reading[] memory decoded) {
        if (readings.length % READING_BYTES != 0) revert MalformedBatch(readings.length, READING_BYTES);
        decoded = new Reading[](readings.length / READING_BYTES);
        for (uint256 i = 0; i < decoded.length; ++i) {
            (bytes32 meter, uint256 values) = _packedAt(readings, i * READING_BYTES);
            decoded[i] = _unpack(meter, values);
        }
    }

    /// @notice The phase records of a packed batch (as in `recordPhaseReadings` and
    /// `PhaseReadingsRecorded`).
    function decodePhaseReadings(bytes calldata readings) external pure returns (PhaseReading[] memory decoded) {
        if (readings.length % PHASE_READING_BYTES != 0) {
            revert MalformedBatch(readings.length, PHASE_READING_BYTES);
        }
        decoded = new PhaseReading[](readings.length / PHASE_READING_BYTES);
        for (uint256 i = 0; i < decoded.length; ++i) {
            (bytes32 meter, uint256 values) = _packedAt(readings, i * PHASE_READING_BYTES);
            decoded[i].reading = _unpack(meter, values);
            decoded[i].phases = uint8(values >> 88);
            for (uint256 phase = 0; phase < 3; ++phase) {
                uint256 quantities = _phaseAt(readings, i, phase);
                decoded[i].values[phase] = PhaseValues(
                    int32(uint32(quantities >> 96)),
                    int32(uint32(quantities >> 64)),
                    uint32(quantities >> 32),
                    int32(uint32(quantities))
                );
            }
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

    /// @dev The meter id and the word of values (high 20 bytes) of the record at byte
    /// `start` of a packed batch (a whole number of records).
    function _packedAt(bytes calldata readings, uint256 start)
        private
        pure
        returns (bytes32 meter, uint256 values)
    {
        assembly ("memory-safe") {
            let offset := add(readings.offset, start)
            meter := calldataload(offset)
            values := calldataload(add(offset, 32))
        }
    }

    /// @dev The 16 bytes of `phase` (0 = L1) of phase record `index`, as P | Q | V | angle
    /// from the high bits of a uint128. The last record's L3 ends 16 bytes before the end of
    /// the 32 read; calldata past its end reads as zeros and is dropped.
    function _phaseAt(bytes calldata readings, uint256 index, uint256 phase)
        private
        pure
        returns (uint256 quantities)
    {
        assembly ("memory-safe") {
            let offset := add(add(readings.offset, mul(index, PHASE_READING_BYTES)), add(53, mul(phase, 16)))
            quantities := shr(128, calldataload(offset))
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
        (activePowerW, reactivePowerVar) = _checkQuantities(index, meter, 0, uint128(values >> 96));
        if (block.timestamp >= deadline) revert ReadingPastDeadline(index, meter, minute, deadline);
    }

    /// @dev Check the phases of phase record `index` (`values`: its word of values).
    function _checkPhases(bytes calldata readings, uint256 index, bytes32 meter, uint256 values) private pure {
        uint8 mask = uint8(values >> 88);
        if (mask == 0 || mask > ALL_PHASES) revert MalformedPhases(index, meter, mask);
        for (uint256 phase = 0; phase < 3; ++phase) {
            uint256 quantities = _phaseAt(readings, index, phase);
            if (mask & (1 << phase) != 0) {
                _checkQuantities(index, meter, phase + 1, quantities);
            } else if (quantities != 0) {
                revert MalformedPhases(index, meter, mask);
            }
        }
    }

    /// @dev Check P | Q | V | angle (from the high bits of a uint128) of reading `index`:
    /// its totals (`phase` 0) or phase L`phase`, whose name prefixes the field of an error.
    /// Returns P and Q.
    function _checkQuantities(uint256 index, bytes32 meter, uint256 phase, uint256 quantities)
        private
        pure
        returns (int32 activePowerW, int32 reactivePowerVar)
    {
        activePowerW = int32(uint32(quantities >> 96));
        reactivePowerVar = int32(uint32(quantities >> 64));
        if (activePowerW > MAX_ABS_POWER || activePowerW < -MAX_ABS_POWER) {
            revert ReadingOutOfRange(index, meter, _field(phase, "activePowerW"), activePowerW);
        }
        if (reactivePowerVar > MAX_ABS_POWER || reactivePowerVar < -MAX_ABS_POWER) {
            revert ReadingOutOfRange(index, meter, _field(phase, "reactivePowerVar"), reactivePowerVar);
        }
        uint32 voltageMicroPu = uint32(quantities >> 32);
        if (voltageMicroPu > MAX_VOLTAGE_MICRO_PU) {
            revert ReadingOutOfRange(
                index, meter, _field(phase, "voltageMicroPu"), int256(uint256(voltageMicroPu))
            );
        }
        int32 angleMicroDeg = int32(uint32(quantities));
        if (angleMicroDeg > MAX_ABS_ANGLE_MICRO_DEG || angleMicroDeg < -MAX_ABS_ANGLE_MICRO_DEG) {
            revert ReadingOutOfRange(index, meter, _field(phase, "angleMicroDeg"), angleMicroDeg);
        }
    }

    /// @dev `name`, or `L<phase>.name` for a phase (1..3).
    function _field(uint256 phase, string memory name) private pure returns (string memory) {
        if (phase == 0) return name;
        return string(bytes.concat("L", bytes1(uint8(48 + phase)), ".", bytes(name)));
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
