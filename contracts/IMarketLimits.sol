// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title What the market and the settlement read from `CapacityLimits`
interface IMarketLimits {
    /// @notice The tightest band in force over market `slot` (W, load convention).
    function tightestBand(bytes32 flexibilityId, uint32 slot)
        external
        view
        returns (int64 pMinW, int64 pMaxW, bool published);
}
