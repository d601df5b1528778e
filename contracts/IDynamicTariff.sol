// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title What the settlement reads from `DynamicTariff`
interface IDynamicTariff {
    /// @notice The DSO's tariff for energy consumed at `bus` in Unix hour `hour` (token
    /// units per kWh; 0 when none was posted).
    function tariffAt(uint32 bus, uint32 hour) external view returns (uint96);

    /// @notice The account whose settlement deposit receives the tariff revenue.
    function payee() external view returns (address);
}
