// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Time of a local energy community: Unix minutes and market slots
/// @notice The chain keeps time in Unix minutes (Unix seconds / 60); market slot `s` of a
/// community with slots of `slotMinutes` minutes holds the minutes
/// `[s · slotMinutes, (s + 1) · slotMinutes)`. Every conversion between seconds, minutes
/// and slots goes through this library.
library CommunityTime {
    /// @notice Seconds in a minute (Unix seconds → Unix minutes).
    uint256 internal constant SECONDS_PER_MINUTE = 60;
    /// @notice Minutes in an hour (e.g. W over minutes → Wh: `P · T / MINUTES_PER_HOUR`).
    uint256 internal constant MINUTES_PER_HOUR = 60;
    /// @notice Minutes in a day.
    uint256 internal constant MINUTES_PER_DAY = 24 * MINUTES_PER_HOUR;
    /// @notice Minutes in a week.
    uint256 internal constant MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY;

    /// @notice The Unix minute of the current block.
    function currentMinute() internal view returns (uint256) {
        return minuteOf(block.timestamp);
    }

    /// @notice The Unix minute that holds Unix time `timestamp` (seconds).
    function minuteOf(uint256 timestamp) internal pure returns (uint256) {
        return timestamp / SECONDS_PER_MINUTE;
    }

    /// @notice A duration of `durationMinutes` minutes in seconds.
    function secondsOf(uint32 durationMinutes) internal pure returns (uint256) {
        unchecked {
            return uint256(durationMinutes) * SECONDS_PER_MINUTE; // < 2^38: cannot overflow
        }
    }

    /// @notice The market slot that holds Unix minute `minute`.
    function slotOf(uint256 minute, uint32 slotMinutes) internal pure returns (uint256) {
        return minute / slotMinutes;
    }

    /// @notice The position of Unix minute `minute` in its slot (0 for the slot's first minute).
    function minuteInSlot(uint256 minute, uint32 slotMinutes) internal pure returns (uint256) {
        return minute % slotMinutes;
    }

    /// @notice The first Unix minute of `slot`.
    function slotStartMinute(uint32 slot, uint32 slotMinutes) internal pure returns (uint256) {
        unchecked {
            return uint256(slot) * slotMinutes; // < 2^64: cannot overflow
        }
    }

    /// @notice The first Unix minute after `slot` (the first minute of the next slot).
    function slotEndMinute(uint32 slot, uint32 slotMinutes) internal pure returns (uint256) {
        unchecked {
            return (uint256(slot) + 1) * slotMinutes; // < 2^65: cannot overflow
        }
    }

    /// @notice When `slot` starts (Unix seconds).
    function slotStartTime(uint32 slot, uint32 slotMinutes) internal pure returns (uint256) {
        unchecked {
            return slotStartMinute(slot, slotMinutes) * SECONDS_PER_MINUTE; // < 2^70
        }
    }

    /// @notice When `slot` ends (Unix seconds): the start of the next slot.
    function slotEndTime(uint32 slot, uint32 slotMinutes) internal pure returns (uint256) {
        unchecked {
            return slotEndMinute(slot, slotMinutes) * SECONDS_PER_MINUTE; // < 2^71
        }
    }
}
