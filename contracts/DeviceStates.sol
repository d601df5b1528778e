// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {RegistryLookup} from "./RegistryLookup.sol";
import {IDeviceStates} from "./IDeviceStates.sol";

/// @title Device-state reports: how available each flexibility's device is
/// @notice The owner of a flexibility (its member's app or agent, which knows whether the car
/// is plugged in and how much it wants) reports the device's state; the DSO's OCM relies on
/// the flexibility only as far as the latest report allows (`ocm/availability.py`).
///
/// **Who.** Only the flexibility's registered owner, while it holds the member role and the
/// flexibility is active. Nobody else (admin, DSO, services) can speak for a device.
///
/// **What, by kind.** An EV charger reports `plugged` and `energyNeedWh`; its battery fields
/// must be zero (refused otherwise, so a stored report never mixes the car's battery into
/// the charger's state). A battery reports `capacityWh` (> 0), `storedWh` and `reserveWh`,
/// neither above the capacity; its `plugged` and `energyNeedWh` are stored as sent and not
/// read by the OCM. Other kinds (heat pump, PV, other) are stored as sent under the same
/// capacity checks; the OCM keeps their hardware limits.
///
/// **How often.** Each report replaces the previous one (latest wins; the events keep the
/// history). There is no rate limit: a member pays the gas of each of its reports, and the
/// OCM reads only the latest.
contract DeviceStates is CommunityRoleGuard, IDeviceStates {
    using RegistryLookup for ICommunityRegistry;

    mapping(bytes32 flexibilityId => DeviceState) private _states;

    /// @param registry_ The community registry (roles and flexibilities).
    constructor(ICommunityRegistry registry_) CommunityRoleGuard(registry_) {}

    /// @notice Report the state of flexibility `flexibilityId`'s device now; replaces the
    /// previous report.
    /// @param plugged EV charger: a car is plugged in.
    /// @param energyNeedWh EV charger: energy the car still wants (Wh).
    /// @param storedWh Battery: energy stored now (Wh); 0 for an EV charger.
    /// @param capacityWh Battery: usable capacity (Wh); 0 for an EV charger.
    /// @param reserveWh Battery: energy kept back (Wh); 0 for an EV charger.
    /// @dev Requirements:
    /// - caller has the member role;
    /// - `flexibilityId` is registered and active (`UnknownFlexibility` otherwise);
    /// - caller is its registered owner (`NotFlexibilityOwner`);
    /// - an EV charger: `storedWh`, `capacityWh` and `reserveWh` are 0 (`StorageStateOnEvCharger`);
    /// - a battery: `capacityWh` > 0 (`ZeroCapacity`);
    /// - `storedWh` ≤ `capacityWh` (`StoredAboveCapacity`) and `reserveWh` ≤ `capacityWh`
    ///   (`ReserveAboveCapacity`).
    function report(
        bytes32 flexibilityId,
        bool plugged,
        uint64 energyNeedWh,
        uint64 storedWh,
        uint64 capacityWh,
        uint64 reserveWh
    ) external onlyCommunityRole(MEMBER_ROLE) {
        ICommunityRegistry.Flexibility memory flex = registry.activeFlexibility(flexibilityId);
        if (flex.owner != msg.sender) revert NotFlexibilityOwner(flexibilityId, msg.sender, flex.owner);
        _checkState(flexibilityId, flex.kind, storedWh, capacityWh, reserveWh);
        _report(
            flexibilityId,
            DeviceState({
                owner: msg.sender,
                time: uint64(block.timestamp),
                plugged: plugged,
                energyNeedWh: energyNeedWh,
                storedWh: storedWh,
                capacityWh: capacityWh,
                reserveWh: reserveWh
            })
        );
    }

    /// @inheritdoc IDeviceStates
    function stateOf(bytes32 flexibilityId) external view returns (DeviceState memory) {
        return _states[flexibilityId];
    }

    // -------------------------------------------------------------- internals

    /// @dev Stores `state` as the latest report on `flexibilityId` and emits `DeviceStateReported`.
    function _report(bytes32 flexibilityId, DeviceState memory state) internal {
        _states[flexibilityId] = state;
        emit DeviceStateReported(
            flexibilityId,
            state.owner,
            state.time,
            state.plugged,
            state.energyNeedWh,
            state.storedWh,
            state.capacityWh,
            state.reserveWh
        );
    }

    /// @dev Reverts unless a report of these battery fields is physical for a flexibility of `kind`.
    function _checkState(
        bytes32 flexibilityId,
        ICommunityRegistry.FlexKind kind,
        uint64 storedWh,
        uint64 capacityWh,
        uint64 reserveWh
    ) private pure {
        if (kind == ICommunityRegistry.FlexKind.EvCharger) {
            if (storedWh != 0 || capacityWh != 0 || reserveWh != 0) {
                revert StorageStateOnEvCharger(flexibilityId, storedWh, capacityWh, reserveWh);
            }
        } else if (kind == ICommunityRegistry.FlexKind.Battery && capacityWh == 0) {
            revert ZeroCapacity(flexibilityId);
        }
        if (storedWh > capacityWh) revert StoredAboveCapacity(flexibilityId, storedWh, capacityWh);
        if (reserveWh > capacityWh) revert ReserveAboveCapacity(flexibilityId, reserveWh, capacityWh);
    }
}
