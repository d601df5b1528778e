// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Device-state reports of flexibilities: types, events, errors, views
/// @notice What a flexibility's owner reports about its device, so the DSO's OCM relies on a
/// flexibility only as far as the device can follow: an EV charger by whether a car is
/// plugged in and the energy it still wants, a battery by its capacity, stored energy and
/// reserve. Energies in whole Wh; times in Unix seconds (block time).
interface IDeviceStates {
    /// @notice The latest report on a flexibility; `time` 0: never reported.
    /// @param owner The account that reported it (the flexibility's registered owner).
    /// @param time Block time of the report (Unix s).
    /// @param plugged EV charger: a car is plugged in.
    /// @param energyNeedWh EV charger: energy the car still wants.
    /// @param storedWh Battery: energy stored now.
    /// @param capacityWh Battery: usable capacity.
    /// @param reserveWh Battery: energy the owner keeps back (not discharged for the grid).
    struct DeviceState {
        address owner;
        uint64 time;
        bool plugged;
        uint64 energyNeedWh;
        uint64 storedWh;
        uint64 capacityWh;
        uint64 reserveWh;
    }

    /// @notice `owner` reported the state of flexibility `flexibility` at block time `time`.
    event DeviceStateReported(
        bytes32 indexed flexibility,
        address indexed owner,
        uint64 time,
        bool plugged,
        uint64 energyNeedWh,
        uint64 storedWh,
        uint64 capacityWh,
        uint64 reserveWh
    );

    /// @notice `account` is not the registered owner `owner` of flexibility `flexibility`.
    error NotFlexibilityOwner(bytes32 flexibility, address account, address owner);
    /// @notice The report says `storedWh`, more than the capacity `capacityWh`.
    error StoredAboveCapacity(bytes32 flexibility, uint64 storedWh, uint64 capacityWh);
    /// @notice The report keeps back `reserveWh`, more than the capacity `capacityWh`.
    error ReserveAboveCapacity(bytes32 flexibility, uint64 reserveWh, uint64 capacityWh);
    /// @notice A battery's report gives no capacity (the OCM cannot count on a battery of 0 Wh).
    error ZeroCapacity(bytes32 flexibility);
    /// @notice An EV charger's report carries battery fields (the car's battery is not the
    /// charger's; an EV charger reports `plugged` and `energyNeedWh` only).
    error StorageStateOnEvCharger(bytes32 flexibility, uint64 storedWh, uint64 capacityWh, uint64 reserveWh);

    /// @notice The latest report on flexibility `flexibilityId` (all zero, `time` 0, when none).
    function stateOf(bytes32 flexibilityId) external view returns (DeviceState memory);
}
