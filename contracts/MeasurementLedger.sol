// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IMarketLedger} from "./IMarketLedger.sol";

/// @title Measurement ledger: per-minute meter readings of the community
/// @notice The gateway records batches of readings (P, Q, V, angle per meter and minute).
/// Every reading is emitted as an event so every node can follow the grid state; the
/// active and reactive energy per (meter, market slot) accumulates in storage for
/// settlement. A batch is atomic: one bad reading rejects the whole batch, with an
/// error that names the reading by its position in the batch (`UnknownMeter` names the
/// meter instead: every reading of that meter in the batch is refused).
///
/// Readings of a slot are accepted until its data deadline, `dataDelayMinutes` after the
/// slot ends, and refused after it: the settlement starts at the deadline and works on data
/// that can no longer change.
contract MeasurementLedger is CommunityRoleGuard, IMarketLedger {
    /// @notice One meter reading. `minute` is the Unix minute (Unix seconds / 60).
    struct Reading {
        bytes32 meter;
        uint32 minute;
        int64 activePowerW;
        int64 reactivePowerVar;
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

    /// @notice A reading was recorded.
    event ReadingRecorded(
        bytes32 indexed meter,
        uint32 indexed minute,
        int64 activePowerW,
        int64 reactivePowerVar,
        uint32 voltageMicroPu,
        int32 angleMicroDeg
    );

    /// @param registry_ The community registry.
    /// @param dataDelayMinutes_ Minutes after a slot's end during which its readings are accepted.
    constructor(ICommunityRegistry registry_, uint32 dataDelayMinutes_) CommunityRoleGuard(registry_) {
        if (dataDelayMinutes_ > MAX_DATA_DELAY_MINUTES) {
            revert DataDelayTooLong(dataDelayMinutes_, MAX_DATA_DELAY_MINUTES);
        }
        slotMinutes = registry_.slotMinutes();
        dataDelayMinutes = dataDelayMinutes_;
    }

    /// @notice Record a batch of readings.
    /// @dev Requirements: caller has the gateway role; the batch is not empty; every
    /// reading names an active meter, a minute not after the current one and of a slot
    /// whose data deadline has not passed, a (meter, minute) not recorded before, |P|, |Q| ≤ MAX_ABS_POWER, V ≤ MAX_VOLTAGE_MICRO_PU and
    /// |angle| ≤ MAX_ABS_ANGLE_MICRO_DEG.
    function recordReadings(Reading[] calldata readings) external onlyCommunityRole(GATEWAY_ROLE) {
        if (readings.length == 0) revert ICommunityErrors.EmptyBatch();
        uint256 currentMinute = CommunityTime.currentMinute();
        for (uint256 i = 0; i < readings.length; ++i) {
            _record(i, readings[i], currentMinute);
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

    /// @dev Check reading `index` of the batch and add it to its meter's slot.
    function _record(uint256 index, Reading calldata reading, uint256 currentMinute) private {
        bytes32 meter = reading.meter;
        if (!registry.isActiveMeter(meter)) revert ICommunityRegistry.UnknownMeter(meter);
        if (reading.minute > currentMinute) {
            revert ReadingFromFuture(index, meter, reading.minute, currentMinute);
        }
        _checkRange(index, reading);

        (uint32 slot, uint64 bit) = _slotAndBit(reading.minute);
        uint256 deadline = dataDeadline(slot);
        if (block.timestamp >= deadline) revert ReadingPastDeadline(index, meter, reading.minute, deadline);
        SlotEnergy storage energy = _slotEnergy[meter][slot];
        if (energy.minutesSeen & bit != 0) revert DuplicateReading(index, meter, reading.minute);
        energy.minutesSeen |= bit;
        energy.readings += 1;
        energy.activeWattMinutes += reading.activePowerW;
        energy.reactiveVarMinutes += reading.reactivePowerVar;

        emit ReadingRecorded(
            meter,
            reading.minute,
            reading.activePowerW,
            reading.reactivePowerVar,
            reading.voltageMicroPu,
            reading.angleMicroDeg
        );
    }

    /// @dev The slot of `minute` and its bit in `SlotEnergy.minutesSeen`.
    function _slotAndBit(uint32 minute) private view returns (uint32 slot, uint64 bit) {
        slot = uint32(CommunityTime.slotOf(minute, slotMinutes));
        bit = uint64(1) << CommunityTime.minuteInSlot(minute, slotMinutes);
    }

    function _checkRange(uint256 index, Reading calldata reading) private pure {
        if (reading.activePowerW > MAX_ABS_POWER || reading.activePowerW < -MAX_ABS_POWER) {
            revert ReadingOutOfRange(index, reading.meter, "activePowerW", reading.activePowerW);
        }
        if (reading.reactivePowerVar > MAX_ABS_POWER || reading.reactivePowerVar < -MAX_ABS_POWER) {
            revert ReadingOutOfRange(index, reading.meter, "reactivePowerVar", reading.reactivePowerVar);
        }
        if (reading.voltageMicroPu > MAX_VOLTAGE_MICRO_PU) {
            revert ReadingOutOfRange(
                index, reading.meter, "voltageMicroPu", int256(uint256(reading.voltageMicroPu))
            );
        }
        if (reading.angleMicroDeg > MAX_ABS_ANGLE_MICRO_DEG || reading.angleMicroDeg < -MAX_ABS_ANGLE_MICRO_DEG) {
            revert ReadingOutOfRange(index, reading.meter, "angleMicroDeg", reading.angleMicroDeg);
        }
    }
}
