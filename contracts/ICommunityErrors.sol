// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Errors raised by several community contracts
/// @notice Declared once so that an error name has one signature (and selector) across the
/// community. Errors about registry entries are in `ICommunityRegistry`.
interface ICommunityErrors {
    /// @notice The call carries no item (an empty batch).
    error EmptyBatch();
    /// @notice An address argument is zero.
    error ZeroAddress();
}
