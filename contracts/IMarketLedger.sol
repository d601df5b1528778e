// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title What the settlement reads from `MeasurementLedger`
interface IMarketLedger {
    /// @notice Energy of `meter` in market `slot`: readings and Σ P over them (W·min).
    function slotEnergy(bytes32 meter, uint32 slot)
        external
        view
        returns (uint16 readings, int88 activeWattMinutes, int88 reactiveVarMinutes);

    /// @notice When readings of `slot` stop being accepted (Unix s): its data are final.
    function dataDeadline(uint32 slot) external view returns (uint256);
}
