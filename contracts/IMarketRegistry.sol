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
