// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The members' deposits as the market uses them
/// @notice Members fund a deposit they control (`Settlement.deposit`/`withdraw`); the
/// market locks part of it while an order or trade needs it and unlocks it again. Only
/// the market bound to the settlement may lock and unlock.
interface IMarketVault {
    /// @notice Lock `amount` of `member`'s free deposit; reverts with
    /// `InsufficientDeposit` when the free deposit is smaller.
    function lock(address member, uint256 amount) external;

    /// @notice Return `amount` of `member`'s locked deposit to its free deposit.
    function unlock(address member, uint256 amount) external;

    /// @notice The price (token units per kWh) at which a sell of `slot` is collateralised:
    /// the import price the settlement charges for energy not delivered.
    function collateralPrice(uint32 slot) external view returns (uint256);
}
