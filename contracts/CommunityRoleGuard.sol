// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {CommunityRoles} from "./CommunityRoles.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title Role checks against the community registry
/// @notice Base for community contracts whose roles are held in `CommunityRegistry`,
/// so a role granted once applies to every contract of the community. Each such contract
/// exposes the role ids (`CommunityRoles`) and the admin role id in its ABI.
abstract contract CommunityRoleGuard is CommunityRoles {
    /// @notice The admin role: the same id as OpenZeppelin's `AccessControl.DEFAULT_ADMIN_ROLE`
    /// in the registry.
    bytes32 public constant DEFAULT_ADMIN_ROLE = 0x00;

    /// @notice The registry that holds the community's roles.
    ICommunityRegistry public immutable registry;

    constructor(ICommunityRegistry registry_) {
        registry = registry_;
    }

    /// @dev Reverts with OpenZeppelin's `AccessControlUnauthorizedAccount` unless the
    /// sender holds `role` in the registry.
    modifier onlyCommunityRole(bytes32 role) {
        _checkCommunityRole(role, msg.sender);
        _;
    }

    /// @dev Reverts with `AccessControlUnauthorizedAccount(account, role)` unless `account`
    /// holds `role` in the registry.
    function _checkCommunityRole(bytes32 role, address account) internal view {
        if (!registry.hasRole(role, account)) {
            revert IAccessControl.AccessControlUnauthorizedAccount(account, role);
        }
    }
}
