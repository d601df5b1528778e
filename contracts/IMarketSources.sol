// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title What the market and the settlement read from the registry
/// @notice The parts of `CommunityRegistry` beyond `ICommunityRegistry` that the market
/// (asset ownership) and the settlement (each member's meters and flexibilities) need.
/// ABI-compatible with `CommunityRegistry`; nothing here is implemented by the market.
interface IMarketRegistry is ICommunityRegistry {
    /// @notice A smart meter as the registry stores it (same layout as `CommunityRegistry.Meter`).
    struct RegisteredMeter {
        address member;
        uint32 bus;
        bool active;
        address signer;
    }

    /// @notice The meter `meterId`; reverts if it is not registered.
    function meter(bytes32 meterId) external view returns (RegisteredMeter memory);

    /// @notice Ids of every registered meter, in registration order.
    function meterIds() external view returns (bytes32[] memory);

    /// @notice Ids of every registered flexibility, in registration order.
    function flexibilityIds() external view returns (bytes32[] memory);
}

/// @title What the market and the settlement read from `CapacityLimits`
interface IMarketLimits {
    /// @notice The tightest band in force over market `slot` (W, load convention).
    function tightestBand(bytes32 flexibilityId, uint32 slot)
        external
        view
        returns (int64 pMinW, int64 pMaxW, bool published);
}

/// @title What the settlement reads from `MeasurementLedger`
interface IMarketLedger {
    /// @notice Energy of `meter` in market `slot`: readings and Σ P over them (W·min).
    function slotEnergy(bytes32 meter, uint32 slot)
        external
        view
        returns (uint16 readings, int88 activeWattMinutes, int88 reactiveVarMinutes);
}
