// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title What the market and the settlement read from the registry
/// @notice The parts of `CommunityRegistry` beyond `ICommunityRegistry` that the market
/// (asset ownership) and the settlement (each member's meters and flexibilities) need;
/// a member's lists cost the same however large the community is.
/// ABI-compatible with `CommunityRegistry`; nothing here is implemented by the market.
interface IMarketRegistry is ICommunityRegistry {
    /// @notice A smart meter as the registry stores it (same layout as `CommunityRegistry.Meter`).
    struct RegisteredMeter {
        address member;
        uint32 bus;
        bool active;
        address signer;
        uint32 registeredMinute;
        uint32 deregisteredMinute;
    }

    /// @notice The meter `meterId`; reverts if it is not registered.
    function meter(bytes32 meterId) external view returns (RegisteredMeter memory);

    /// @notice Ids of `member`'s meters, in registration order.
    function metersOf(address member) external view returns (bytes32[] memory);

    /// @notice Ids of `owner`'s flexibilities, in registration order.
    function flexibilitiesOf(address owner) external view returns (bytes32[] memory);

    /// @notice Owner of a meter (`isFlexibility` false) or flexibility and whether it is
    /// active; a zero owner when there is no such asset (never reverts).
    function assetOwner(bool isFlexibility, bytes32 assetId) external view returns (address owner, bool active);

    /// @notice The flexibility that meter `meterId` measures (zero: a household meter).
    function flexibilityOfMeter(bytes32 meterId) external view returns (bytes32);
}
