// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title Lookups in the community registry shared by the contracts that act on flexibilities
library RegistryLookup {
    /// @notice The registry's flexibility `flexibilityId`.
    /// @dev Reverts with the registry's `UnknownFlexibility` unless it is registered and active.
    function activeFlexibility(ICommunityRegistry registry, bytes32 flexibilityId)
        internal
        view
        returns (ICommunityRegistry.Flexibility memory flex)
    {
        try registry.flexibility(flexibilityId) returns (ICommunityRegistry.Flexibility memory found) {
            flex = found;
        } catch {
            revert ICommunityRegistry.UnknownFlexibility(flexibilityId);
        }
        if (!flex.active) revert ICommunityRegistry.UnknownFlexibility(flexibilityId);
    }
}
