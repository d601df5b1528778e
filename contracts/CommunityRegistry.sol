// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {CommunityRoles} from "./CommunityRoles.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";

/// @title Community registry: roles, members, meters and flexibilities
/// @notice The one place where a local energy community records who takes part and
/// which devices exist on which grid bus. It is also the role authority of every other
/// community contract (see `CommunityRoleGuard`).
///
/// The admin role has one holder and moves in two steps with a delay
/// (OpenZeppelin `AccessControlDefaultAdminRules`): the admin proposes a successor, who
/// accepts after `ADMIN_TRANSFER_DELAY`. Every flexibility has its own meter (a sub-meter
/// that measures it alone), so settlement can price what it did outside its band.
contract CommunityRegistry is AccessControlDefaultAdminRules, CommunityRoles, ICommunityRegistry {
    /// @notice A smart meter at a customer connection; `registeredMinute` and
    /// `deregisteredMinute` (0 while active) are the Unix minutes of its registration and
    /// deregistration: settlement expects its readings for the minutes in between.
    struct Meter {
        address member;
        uint32 bus;
        bool active;
        address signer;
        uint32 registeredMinute;
        uint32 deregisteredMinute;
    }

    /// @notice Delay between proposing a new admin and its acceptance taking effect.
    uint48 public constant ADMIN_TRANSFER_DELAY = 2 days;

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
    mapping(address member => bytes32[] meterIds) private _memberMeters;
    mapping(address owner => bytes32[] flexibilityIds) private _memberFlexibilities;
    /// @notice The flexibility that meter `meterId` measures (zero: a household meter).
    mapping(bytes32 meterId => bytes32 flexibilityId) public flexibilityOfMeter;

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
    /// @notice A flexibility needs its own meter, of its owner, measuring no other flexibility.
    error FlexibilityMeterInvalid(bytes32 flexibilityId, bytes32 meterId);

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
    constructor(address admin, string memory name, uint32 slotMinutes_)
        AccessControlDefaultAdminRules(ADMIN_TRANSFER_DELAY, admin)
    {
        if (slotMinutes_ == 0 || slotMinutes_ > MAX_SLOT_MINUTES) revert InvalidSlotLength(slotMinutes_);
        communityName = name;
        slotMinutes = slotMinutes_;
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
        _meters[meterId] = Meter({
            member: member,
            bus: bus,
            active: true,
            signer: signer,
            registeredMinute: uint32(block.timestamp / 60),
            deregisteredMinute: 0
        });
        _meterIds.push(meterId);
        _memberMeters[member].push(meterId);
        emit MeterRegistered(meterId, member, bus, signer);
    }

    /// @notice Replace the signing key of meter `meterId` (key rotation).
    /// @dev Requirements: caller has the admin role; the meter exists; signer not zero.
    function setMeterSigner(bytes32 meterId, address signer) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (signer == address(0)) revert ZeroIdentifier();
        _requireMeter(meterId).signer = signer;
        emit MeterSignerChanged(meterId, signer);
    }

    /// @notice Stop accepting readings of meter `meterId`; its history stays. A flexibility
    /// it measures is deactivated with it (a flexibility never trades without its meter).
    /// @dev Requirements: caller has the admin role; the meter exists.
    function deregisterMeter(bytes32 meterId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Meter storage found = _requireMeter(meterId);
        if (found.active) (found.active, found.deregisteredMinute) = (false, uint32(block.timestamp / 60));
        emit MeterDeregistered(meterId);
        bytes32 measured = flexibilityOfMeter[meterId];
        if (measured != bytes32(0) && _flexibilities[measured].active) {
            _flexibilities[measured].active = false;
            emit FlexibilityDeactivated(measured);
        }
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

    /// @notice Ids of `member`'s meters (active or not), in registration order.
    function metersOf(address member) external view returns (bytes32[] memory) {
        return _memberMeters[member];
    }

    // ----------------------------------------------------------- flexibilities

    /// @notice Register flexibility `flexibilityId` owned by `owner` at grid `bus`.
    /// @param pLowW Lowest hardware power in W, load convention (negative = injection).
    /// @param pHighW Highest hardware power in W.
    /// @param priorityGroup OCM priority group; lower groups get their bands first.
    /// @param meterId The flexibility's own meter (a sub-meter that measures it alone).
    /// @dev Requirements: caller has the admin role; `owner` is a member; the id is new;
    /// `-MAX_FLEX_POWER_W ≤ pLowW ≤ pHighW ≤ MAX_FLEX_POWER_W`; `meterId` is a registered
    /// active meter of `owner` that measures no other flexibility.
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
        if (
            meterId == bytes32(0) || _meters[meterId].member != owner || !_meters[meterId].active
                || flexibilityOfMeter[meterId] != bytes32(0)
        ) revert FlexibilityMeterInvalid(flexibilityId, meterId);
        flexibilityOfMeter[meterId] = flexibilityId;
        _memberFlexibilities[owner].push(flexibilityId);
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

    /// @notice Owner of a meter (`isFlexibility` false) or flexibility and whether it is
    /// active; a zero owner when there is no such asset (never reverts).
    function assetOwner(bool isFlexibility, bytes32 assetId) external view returns (address owner, bool active) {
        if (isFlexibility) return (_flexibilities[assetId].owner, _flexibilities[assetId].active);
        return (_meters[assetId].member, _meters[assetId].active);
    }

    /// @notice Ids of `owner`'s flexibilities (active or not), in registration order.
    function flexibilitiesOf(address owner) external view returns (bytes32[] memory) {
        return _memberFlexibilities[owner];
    }

    // --------------------------------------------------------------- internals

    function hasRole(bytes32 role, address account)
        public
        view
        override(AccessControl, IAccessControl, ICommunityRegistry)
        returns (bool)
    {
        return super.hasRole(role, account);
    }

    function _requireMeter(bytes32 meterId) private view returns (Meter storage found) {
        found = _meters[meterId];
        if (found.member == address(0)) revert UnknownMeter(meterId);
    }
}
