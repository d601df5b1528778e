// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Roles of a local energy community
/// @notice Role identifiers shared by every community contract. The admin role is
/// OpenZeppelin's `DEFAULT_ADMIN_ROLE` (0x00); it grants and revokes all others.
library Roles {
    bytes32 internal constant ADMIN = 0x00;
    /// @notice The distribution system operator: posts DREM-style limitations.
    bytes32 internal constant DSO = keccak256("DSO_ROLE");
    /// @notice The OCM service of the DSO: publishes capacity bands.
    bytes32 internal constant OCM_ORACLE = keccak256("OCM_ORACLE_ROLE");
    /// @notice The MQTT meter gateway: records meter readings.
    bytes32 internal constant GATEWAY = keccak256("GATEWAY_ROLE");
    /// @notice The market operator: configures markets and prices, mints tokens.
    bytes32 internal constant MARKET_OPERATOR = keccak256("MARKET_OPERATOR_ROLE");
    /// @notice An aggregator of flexibilities (flexibility market bids).
    bytes32 internal constant AGGREGATOR = keccak256("AGGREGATOR_ROLE");
    /// @notice A community member: owns meters and flexibilities, trades energy.
    bytes32 internal constant MEMBER = keccak256("MEMBER_ROLE");
}
