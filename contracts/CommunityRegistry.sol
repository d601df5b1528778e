// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {CommunityRoles} from "./CommunityRoles.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title Community registry: roles, members, meters and flexibilities
/// @notice The one place where a local energy community records who takes part and
/// which devices exist on which grid bus. It is also the role authority of every other
/// community contract (see `CommunityRoleGuard`).
contract CommunityRegistry is AccessControl, CommunityRoles, ICommunityRegistry {
    /// @notice A smart meter at a customer connection.
    struct Meter {
        address member;
        uint32 bus;
        bool active;
        address signer;
    }

    /// @notice Largest power magnitude a flexibility may register, in W (1 GW).
    int64 public constant MAX_FLEX_POWER_W = 1_000_000_000;
    /// @notice Largest market slot, in minutes (the ledger tracks minutes in a 64-bit mask).
    uint32 public constant MAX_SLOT_MINUTES = 64;

    /// @notice Name of the community.
    string public communityName;
    /// @inheritdoc ICommunityRegistry
    uint32 public immutable slotMinutes;

    mapping(address account => bytes32 name) public memberName;
    mapping(bytes32 meterId => Meter) private _meters;
    mapping(bytes32 flexibilityId => Flexibility) private _flexibilities;
    bytes32[] private _meterIds;
    bytes32[] private _flexibilityIds;
    address[] private _members;

    /// @notice `slotMinutes` is 0 or larger than `MAX_SLOT_MINUTES`.
    error InvalidSlotLength(uint32 slotMinutes);
    /// @notice An identifier or address argument is zero.
    error ZeroIdentifier();
    /// @notice `account` is already a member.
    error AlreadyMember(address account);
    /// @notice `account` is not a member.
    error NotAMember(address account);
    /// @notice A meter with this id exists already.
    error MeterAlreadyRegistered(bytes32 meterId);
    /// @notice A flexibility with this id exists already.
    error FlexibilityAlreadyRegistered(bytes32 flexibilityId);
    /// @notice Hardware bounds must satisfy `-MAX ≤ pLowW ≤ pHighW ≤ MAX`.
    error InvalidHardwareBounds(bytes32 flexibilityId, int64 pLowW, int64 pHighW);

    event MemberAdded(address indexed account, bytes32 name);
    event MemberRemoved(address indexed account);
    event MeterRegistered(bytes32 indexed meterId, address indexed member, uint32 bus, address signer);
    event MeterSignerChanged(bytes32 indexed meterId, address signer);
    event MeterDeregistered(bytes32 indexed meterId);
    event FlexibilityRegistered(
        bytes32 indexed flexibilityId,
        address indexed owner,
        uint32 bus,
        FlexKind kind,
        int64 pLowW,
        int64 pHighW,
        uint8 priorityGroup,
        bytes32 meter
    );
    event FlexibilityDeactivated(bytes32 indexed flexibilityId);

    /// @param admin Account that receives the admin role.
    /// @param name Human name of the community.
    /// @param slotMinutes_ Market delivery slot length in minutes (1..64).
    constructor(address admin, string memory name, uint32 slotMinutes_) {
        if (admin == address(0)) revert ZeroIdentifier();
        if (slotMinutes_ == 0 || slotMinutes_ > MAX_SLOT_MINUTES) revert InvalidSlotLength(slotMinutes_);
        communityName = name;
        slotMinutes = slotMinutes_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ----------------------------------------------------------------- members

    /// @notice Admit `account` as a member under a human `name`; grants the member role.
    /// @dev Requirements: caller has the admin role; `account` is not zero and not a member.
    function addMember(address account, bytes32 name) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (account == address(0)) revert ZeroIdentifier();
        if (hasRole(MEMBER_ROLE, account)) revert AlreadyMember(account);
        memberName[account] = name;
        _members.push(account);
        _grantRole(MEMBER_ROLE, account);
        emit MemberAdded(account, name);
    }

    /// @notice Remove `account` from the community; revokes the member role.
    /// @dev Requirements: caller has the admin role; `account` is a member.
    function removeMember(address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!hasRole(MEMBER_ROLE, account)) revert NotAMember(account);
        _revokeRole(MEMBER_ROLE, account);
        emit MemberRemoved(account);
    }

    /// @notice Every account ever admitted (check the member role for current membership).
    function members() external view returns (address[] memory) {
        return _members;
    }

    // ------------------------------------------------------------------ meters

    /// @notice Register meter `meterId` of `member` at grid `bus`, signing with `signer`.
    /// @dev Requirements: caller has the admin role; id and signer not zero; `member` is a
    /// member; the id is new.
    function registerMeter(bytes32 meterId, uint32 bus, address member, address signer)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (meterId == bytes32(0) || signer == address(0)) revert ZeroIdentifier();
        if (!hasRole(MEMBER_ROLE, member)) revert NotAMember(member);
        if (_meters[meterId].member != address(0)) revert MeterAlreadyRegistered(meterId);
        _meters[meterId] = Meter({member: member, bus: bus, active: true, signer: signer});
        _meterIds.push(meterId);
        emit MeterRegistered(meterId, member, bus, signer);
    }

    /// @notice Replace the signing key of meter `meterId` (key rotation).
    /// @dev Requirements: caller has the admin role; the meter exists; signer not zero.
    function setMeterSigner(bytes32 meterId, address signer) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (signer == address(0)) revert ZeroIdentifier();
        _requireMeter(meterId).signer = signer;
        emit MeterSignerChanged(meterId, signer);
    }

    /// @notice Stop accepting readings of meter `meterId`; its history stays.
    /// @dev Requirements: caller has the admin role; the meter exists.
    function deregisterMeter(bytes32 meterId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireMeter(meterId).active = false;
        emit MeterDeregistered(meterId);
    }

    /// @notice The meter `meterId`; reverts with `UnknownMeter` if absent.
    function meter(bytes32 meterId) external view returns (Meter memory) {
        Meter memory found = _meters[meterId];
        if (found.member == address(0)) revert UnknownMeter(meterId);
        return found;
    }

    /// @inheritdoc ICommunityRegistry
    function isActiveMeter(bytes32 meterId) external view returns (bool) {
        return _meters[meterId].active;
    }

    /// @notice Ids of every registered meter, in registration order.
    function meterIds() external view returns (bytes32[] memory) {
        return _meterIds;
    }

    // ----------------------------------------------------------- flexibilities

    /// @notice Register flexibility `flexibilityId` owned by `owner` at grid `bus`.
    /// @param pLowW Lowest hardware power in W, load convention (negative = injection).
    /// @param pHighW Highest hardware power in W.
    /// @param priorityGroup OCM priority group; lower groups get their bands first.
    /// @param meterId Meter that measures this flexibility (zero if none).
    /// @dev Requirements: caller has the admin role; `owner` is a member; the id is new;
    /// `-MAX_FLEX_POWER_W ≤ pLowW ≤ pHighW ≤ MAX_FLEX_POWER_W`; `meterId` zero or registered.
    function registerFlexibility(
        bytes32 flexibilityId,
        address owner,
        uint32 bus,
        FlexKind kind,
        int64 pLowW,
        int64 pHighW,
        uint8 priorityGroup,
        bytes32 meterId
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (flexibilityId == bytes32(0)) revert ZeroIdentifier();
        if (!hasRole(MEMBER_ROLE, owner)) revert NotAMember(owner);
        if (_flexibilities[flexibilityId].owner != address(0)) {
            revert FlexibilityAlreadyRegistered(flexibilityId);
        }
        if (pLowW > pHighW || pLowW < -MAX_FLEX_POWER_W || pHighW > MAX_FLEX_POWER_W) {
            revert InvalidHardwareBounds(flexibilityId, pLowW, pHighW);
        }
        if (meterId != bytes32(0)) _requireMeter(meterId);
        _flexibilities[flexibilityId] = Flexibility({
            owner: owner,
            bus: bus,
            kind: kind,
            priorityGroup: priorityGroup,
            active: true,
            pLowW: pLowW,
            pHighW: pHighW,
            meter: meterId
        });
        _flexibilityIds.push(flexibilityId);
        emit FlexibilityRegistered(flexibilityId, owner, bus, kind, pLowW, pHighW, priorityGroup, meterId);
    }

    /// @notice Take flexibility `flexibilityId` out of operation; its history stays.
    /// @dev Requirements: caller has the admin role; the flexibility exists.
    function deactivateFlexibility(bytes32 flexibilityId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Flexibility storage found = _flexibilities[flexibilityId];
        if (found.owner == address(0)) revert UnknownFlexibility(flexibilityId);
        found.active = false;
        emit FlexibilityDeactivated(flexibilityId);
    }

    /// @inheritdoc ICommunityRegistry
    function flexibility(bytes32 flexibilityId) external view returns (Flexibility memory) {
        Flexibility memory found = _flexibilities[flexibilityId];
        if (found.owner == address(0)) revert UnknownFlexibility(flexibilityId);
        return found;
    }

    /// @notice Ids of every registered flexibility, in registration order.
    function flexibilityIds() external view returns (bytes32[] memory) {
        return _flexibilityIds;
    }

    // --------------------------------------------------------------- internals

    function hasRole(bytes32 role, address account)
        public
        view
        override(AccessControl, ICommunityRegistry)
        returns (bool)
    {
        return super.hasRole(role, account);
    }

    function _requireMeter(bytes32 meterId) private view returns (Meter storage found) {
        found = _meters[meterId];
        if (found.member == address(0)) revert UnknownMeter(meterId);
    }
}
