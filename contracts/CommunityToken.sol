// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title Community token: the ERC-20 in which the community settles
/// @notice Transfers and approvals are standard ERC-20 (any holder). Only the market
/// operator or the admin may mint (e.g. when a member pays in euros off chain).
contract CommunityToken is ERC20, CommunityRoleGuard {
    constructor(ICommunityRegistry registry_, string memory name_, string memory symbol_)
        ERC20(name_, symbol_)
        CommunityRoleGuard(registry_)
    {}

    /// @notice Create `amount` tokens (smallest units) for `to`.
    /// @dev Requirements: caller has the market-operator or the admin role (the error
    /// names the market-operator role); `to` is not zero.
    function mint(address to, uint256 amount) external {
        if (
            !registry.hasRole(MARKET_OPERATOR_ROLE, msg.sender)
                && !registry.hasRole(DEFAULT_ADMIN_ROLE, msg.sender)
        ) {
            revert IAccessControl.AccessControlUnauthorizedAccount(msg.sender, MARKET_OPERATOR_ROLE);
        }
        _mint(to, amount);
    }
}
