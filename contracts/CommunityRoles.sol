// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Roles of a local energy community
/// @notice Role identifiers shared by every community contract, public so that clients
/// read them from the ABI instead of hashing the names themselves. The admin role is
/// OpenZeppelin's `DEFAULT_ADMIN_ROLE` (0x00); it grants and revokes all others.
abstract contract CommunityRoles {
    /// @notice The distribution system operator: posts DREM-style limitations.
    bytes32 public constant DSO_ROLE = keccak256("DSO_ROLE");
    /// @notice The OCM service of the DSO: publishes capacity bands.
    bytes32 public constant OCM_ORACLE_ROLE = keccak256("OCM_ORACLE_ROLE");
    /// @notice The MQTT meter gateway: records meter readings.
    bytes32 public constant GATEWAY_ROLE = keccak256("GATEWAY_ROLE");
    /// @notice The market operator: configures markets and prices, mints tokens.
    bytes32 public constant MARKET_OPERATOR_ROLE = keccak256("MARKET_OPERATOR_ROLE");
    /// @notice An aggregator of flexibilities (flexibility market bids).
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");
    /// @notice A community member: owns meters and flexibilities, trades energy.
    bytes32 public constant MEMBER_ROLE = keccak256("MEMBER_ROLE");
}
