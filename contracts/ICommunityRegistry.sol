// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title What the other community contracts read from the registry
interface ICommunityRegistry {
    /// @notice Kinds of flexibility, as registered.
    enum FlexKind {
        Battery,
        EvCharger,
        HeatPump,
        Pv,
        Other
    }

    /// @notice A registered flexibility. Powers in W, load convention (consumption > 0).
    struct Flexibility {
        address owner;
        uint32 bus;
        FlexKind kind;
        uint8 priorityGroup;
        bool active;
        int64 pLowW;
        int64 pHighW;
        bytes32 meter;
    }

    /// @notice No meter `meter` is registered (or, where an active one is needed, it was
    /// deregistered). In a batch the id names the item.
    error UnknownMeter(bytes32 meter);
    /// @notice No flexibility `flexibility` is registered (or, where an active one is
    /// needed, it was deactivated). In a batch the id names the item.
    error UnknownFlexibility(bytes32 flexibility);

    /// @notice True when `account` holds `role`.
    function hasRole(bytes32 role, address account) external view returns (bool);

    /// @notice Length of a market delivery slot in minutes, fixed at deployment.
    function slotMinutes() external view returns (uint32);

    /// @notice True when `meterId` is registered and not deregistered.
    function isActiveMeter(bytes32 meterId) external view returns (bool);

    /// @notice The flexibility `flexibilityId`; reverts with `UnknownFlexibility` if absent.
    function flexibility(bytes32 flexibilityId) external view returns (Flexibility memory);
}
