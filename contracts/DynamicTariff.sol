// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IDynamicTariff} from "./IDynamicTariff.sol";

/// @title What the tariff reads from the energy market: its gate-closure lead time
interface IMarketGate {
    /// @notice Orders for a slot close this many minutes before the slot starts.
    function gateClosureMinutes() external view returns (uint32);
}

/// @title Dynamic network tariffs of the DSO, per bus and hour
/// @notice The DSO posts a tariff (token units per kWh, same decimals as the settlement's
/// prices) for pairs (bus, hour), `hour` being the Unix hour index (Unix seconds / 3600).
/// `Settlement` charges it on each meter's metered consumption (positive energy) in every
/// slot that starts in the hour; net injection is neither charged nor credited.
///
/// **When.** A tariff for an hour can be posted and changed until the market's gate closes
/// for the hour's first slot: `hourStart − gateClosureMinutes` (`postingDeadline`), never
/// later. So every slot the tariff applies to is traded with the tariff known and no
/// slot is repriced after members can no longer trade around it; a gate-closure lead time
/// raised later only makes this stricter for later postings.
///
/// **How much.** At most `MAX_TARIFF` (10 tokens per kWh, some 30 times a household import
/// price) and `MAX_ENTRIES` pairs per call, so a DSO mistake cannot empty deposits in one
/// posting and a posting's gas is bounded.
///
/// **Who is paid.** The revenue goes to the deposit (in `Settlement`) of `payee`, an account
/// the DSO names (`setPayee`); a member's unpaid tariff is recorded as its tariff debt and
/// paid to the payee in force when it is collected.
contract DynamicTariff is CommunityRoleGuard, IDynamicTariff {
    /// @notice One tariff: `price` (token units per kWh) at `bus` in Unix hour `hour`.
    struct Entry {
        uint32 bus;
        uint32 hour;
        uint96 price;
    }

    /// @notice Highest tariff: 10 tokens per kWh (18 decimals).
    uint96 public constant MAX_TARIFF = 10e18;
    /// @notice Most entries per `postTariffs` call.
    uint256 public constant MAX_ENTRIES = 96;
    uint256 private constant SECONDS_PER_HOUR = CommunityTime.SECONDS_PER_MINUTE * CommunityTime.MINUTES_PER_HOUR;

    /// @notice The energy market whose gate closure bounds the posting time.
    IMarketGate public immutable market;
    /// @inheritdoc IDynamicTariff
    address public payee;

    mapping(uint32 bus => mapping(uint32 hour => uint96 price)) private _tariffs;

    /// @notice `dso` posted `price` (token units per kWh) for `bus` in Unix hour `hour`.
    event TariffPosted(uint32 indexed bus, uint32 indexed hour, uint96 price, address indexed dso);
    /// @notice Tariff revenue is paid to `payee` from now on.
    event PayeeSet(address payee);

    /// @notice A posting carries `count` entries; at most `maxEntries` are taken.
    error TooManyEntries(uint256 count, uint256 maxEntries);
    /// @notice Entry `index` asks for `price`, above `maxPrice`.
    error TariffTooHigh(uint256 index, uint96 price, uint96 maxPrice);
    /// @notice Entry `index` is for `hour`, whose tariff could be posted until `deadline`
    /// (Unix s, the gate closure of its first slot); the block time is `blockTime`.
    error TariffHourClosed(uint256 index, uint32 hour, uint256 deadline, uint256 blockTime);

    /// @param registry_ The community registry.
    /// @param market_ The energy market (its gate-closure lead time bounds postings).
    /// @param payee_ The account first paid the tariff revenue.
    constructor(ICommunityRegistry registry_, IMarketGate market_, address payee_) CommunityRoleGuard(registry_) {
        if (address(market_) == address(0) || payee_ == address(0)) revert ICommunityErrors.ZeroAddress();
        market = market_;
        payee = payee_;
        emit PayeeSet(payee_);
    }

    /// @notice Post or change the tariffs `entries` (a later entry for the same pair wins).
    /// @dev Requirements: caller has the DSO role; 1..MAX_ENTRIES entries; every price
    /// ≤ MAX_TARIFF; the block time is before every entry's `postingDeadline`.
    function postTariffs(Entry[] calldata entries) external onlyCommunityRole(DSO_ROLE) {
        if (entries.length == 0) revert ICommunityErrors.EmptyBatch();
        if (entries.length > MAX_ENTRIES) revert TooManyEntries(entries.length, MAX_ENTRIES);
        uint256 lead = CommunityTime.secondsOf(market.gateClosureMinutes());
        for (uint256 i = 0; i < entries.length; ++i) {
            Entry calldata entry = entries[i];
            if (entry.price > MAX_TARIFF) revert TariffTooHigh(i, entry.price, MAX_TARIFF);
            uint256 deadline = _deadline(entry.hour, lead);
            if (block.timestamp >= deadline) revert TariffHourClosed(i, entry.hour, deadline, block.timestamp);
            _tariffs[entry.bus][entry.hour] = entry.price;
            emit TariffPosted(entry.bus, entry.hour, entry.price, msg.sender);
        }
    }

    /// @notice Pay the tariff revenue to `payee_`'s deposit from now on (also what is
    /// collected later of tariff debts recorded before).
    /// @dev Requirements: caller has the DSO role; `payee_` is not zero.
    function setPayee(address payee_) external onlyCommunityRole(DSO_ROLE) {
        if (payee_ == address(0)) revert ICommunityErrors.ZeroAddress();
        payee = payee_;
        emit PayeeSet(payee_);
    }

    /// @inheritdoc IDynamicTariff
    function tariffAt(uint32 bus, uint32 hour) external view returns (uint96) {
        return _tariffs[bus][hour];
    }

    /// @notice Until when (Unix s, exclusive) the tariff of Unix hour `hour` can be posted:
    /// its start less the market's gate-closure lead time.
    function postingDeadline(uint32 hour) external view returns (uint256) {
        return _deadline(hour, CommunityTime.secondsOf(market.gateClosureMinutes()));
    }

    function _deadline(uint32 hour, uint256 lead) private pure returns (uint256) {
        uint256 start = uint256(hour) * SECONDS_PER_HOUR;
        return start > lead ? start - lead : 0;
    }
}
