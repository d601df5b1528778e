// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IEnergyMarket} from "./IEnergyMarket.sol";
import {IMarketLedger} from "./IMarketLedger.sol";
import {IMarketLimits} from "./IMarketLimits.sol";
import {IMarketRegistry} from "./IMarketRegistry.sol";

/// @title Settlement of delivered slots: traded schedule against the meters
/// @notice Once a slot is final (its end plus a finality delay, so late readings arrive),
/// anyone may settle members for it, each (member, slot) once:
/// - the member's traded net energy `T = bought − sold` (Wh, from the market) is compared
///   with its metered energy `M` (Σ over its meters of the slot's W·min / 60);
/// - the imbalance `I = M − T` is bought from the grid through the community treasury when
///   positive (the member pays `ceil(I · importPrice / 1000)` to the treasury) and sold to
///   it when negative (the treasury pays `floor(−I · exportPrice / 1000)` to the member);
///   prices are token units per kWh, set per slot by the market operator;
/// - the member's sale proceeds (held in the market's escrow) are released: they pay what
///   the member owes the treasury first, the rest goes to the member;
/// - what cannot be collected (balance or allowance too small) is recorded as a debt of the
///   member (or of the treasury to the member) and netted against its next settlement or
///   collected by `settleDebts`;
/// - each of the member's metered flexibilities is checked ex post against its tightest
///   band: energy above `P_max · minutes` or below `P_min · minutes` of the recorded minutes
///   is recorded as a violation (DREM's compliance check).
/// Members approve this contract for the token to pay imbalances; the treasury approves it
/// to pay surpluses.
contract Settlement is CommunityRoleGuard {
    using SafeERC20 for IERC20;

    /// @notice Grid prices (token units per kWh) in force from slot `fromSlot` on.
    struct GridPrices {
        uint32 fromSlot;
        uint112 importPrice;
        uint112 exportPrice;
    }

    /// @notice A flexibility with the meter that measures it.
    struct MeteredFlexibility {
        bytes32 flexibility;
        bytes32 meter;
    }

    /// @notice Band violations of a flexibility over all settled slots.
    struct Violations {
        uint32 count;
        uint224 wattMinutes;
    }

    /// @notice Longest finality delay (one week).
    uint32 public constant MAX_FINALITY_DELAY_MINUTES = uint32(CommunityTime.MINUTES_PER_WEEK);
    uint256 private constant WATT_MINUTES_PER_KWH = 1000 * CommunityTime.MINUTES_PER_HOUR;

    uint32 public immutable slotMinutes;
    IMarketLedger public immutable ledger;
    IMarketLimits public immutable limits;
    IERC20 public immutable token;
    IEnergyMarket public immutable market;

    /// @notice The community account that buys imbalances from and sells them to the grid.
    address public treasury;
    /// @notice A slot is final this many minutes after it ends.
    uint32 public finalityDelayMinutes;
    /// @notice Registry meters and flexibilities already assigned to their members.
    uint256 public indexedMeters;
    uint256 public indexedFlexibilities;

    GridPrices[] private _prices;
    mapping(address member => bytes32[] meterIds) private _meters;
    mapping(address member => MeteredFlexibility[]) private _flexibilities;
    mapping(address member => mapping(uint32 slot => bool)) private _settled;
    mapping(bytes32 flexibility => Violations) private _violations;
    /// @notice What `member` owes the treasury and could not pay yet.
    mapping(address member => uint256 amount) public debtOf;
    /// @notice What the treasury owes `member` and could not pay yet.
    mapping(address member => uint256 amount) public creditOf;

    event TreasurySet(address treasury);
    event GridPricesSet(uint32 fromSlot, uint112 importPrice, uint112 exportPrice);
    event FinalityDelaySet(uint32 delayMinutes);
    event AssetsIndexed(uint256 meters, uint256 flexibilities);
    /// @notice `member`'s slot: traded net `tradedWh`, metered `meteredWattMinutes`, imbalance
    /// `imbalanceWattMinutes` (W·min, + = took more than it bought) valued at `imbalanceAmount`
    /// (+ = member pays the treasury, − = the treasury pays the member).
    event MemberSettled(
        address indexed member,
        uint32 indexed slot,
        int256 tradedWh,
        int256 meteredWattMinutes,
        int256 imbalanceWattMinutes,
        int256 imbalanceAmount,
        uint256 proceeds
    );
    /// @notice Tokens moved for `member`: to and from the treasury, proceeds paid out, and
    /// the debts left (`debt` owed by the member, `credit` owed to it).
    event MemberPaid(
        address indexed member,
        uint32 indexed slot,
        uint256 paidToTreasury,
        uint256 paidByTreasury,
        uint256 proceedsPaidOut,
        uint256 debt,
        uint256 credit
    );
    /// @notice Flexibility `flexibility` used energy outside its band in `slot`.
    event BandViolation(
        bytes32 indexed flexibility,
        uint32 indexed slot,
        address indexed owner,
        uint256 outsideWattMinutes,
        int256 meteredWattMinutes,
        uint16 readings,
        int64 pMinW,
        int64 pMaxW
    );

    /// @notice `slot` is final at `finalTime` (Unix s); it is `blockTime`.
    error SlotNotFinal(uint32 slot, uint256 finalTime, uint256 blockTime);
    error TreasuryNotSet();
    /// @notice No grid prices are in force for `slot`.
    error NoGridPrices(uint32 slot);
    /// @notice Prices can be set only for slots after the current one.
    error PriceSlotNotInFuture(uint32 fromSlot, uint256 currentSlot);
    error ExportAboveImport(uint112 importPrice, uint112 exportPrice);
    error FinalityDelayTooLong(uint32 delayMinutes, uint32 maxMinutes);

    /// @param registry_ The community registry.
    /// @param ledger_ The measurement ledger.
    /// @param limits_ The capacity limits.
    /// @param token_ The community token.
    /// @param market_ The energy market (it must bind this contract).
    /// @param finalityDelayMinutes_ Minutes after a slot's end before it can be settled.
    constructor(
        ICommunityRegistry registry_,
        IMarketLedger ledger_,
        IMarketLimits limits_,
        IERC20 token_,
        IEnergyMarket market_,
        uint32 finalityDelayMinutes_
    ) CommunityRoleGuard(registry_) {
        if (
            address(ledger_) == address(0) || address(limits_) == address(0) || address(token_) == address(0)
                || address(market_) == address(0)
        ) revert ICommunityErrors.ZeroAddress();
        slotMinutes = registry_.slotMinutes();
        (ledger, limits, token, market) = (ledger_, limits_, token_, market_);
        _setFinalityDelay(finalityDelayMinutes_);
    }

    // ---------------------------------------------------------------- configuration

    /// @notice Set the community treasury account.
    /// @dev Requirements: caller has the market-operator role; `treasury_` not zero.
    function setTreasury(address treasury_) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        if (treasury_ == address(0)) revert ICommunityErrors.ZeroAddress();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }

    /// @notice Grid import and export prices (token units per kWh) from slot `fromSlot` on;
    /// replaces any prices scheduled for `fromSlot` or later.
    /// @dev Requirements: caller has the market-operator role; `fromSlot` is after the
    /// current slot; `exportPrice ≤ importPrice`.
    function setGridPrices(uint32 fromSlot, uint112 importPrice, uint112 exportPrice)
        external
        onlyCommunityRole(MARKET_OPERATOR_ROLE)
    {
        uint256 current = CommunityTime.slotOf(CommunityTime.currentMinute(), slotMinutes);
        if (fromSlot <= current) revert PriceSlotNotInFuture(fromSlot, current);
        if (exportPrice > importPrice) revert ExportAboveImport(importPrice, exportPrice);
        while (_prices.length > 0 && _prices[_prices.length - 1].fromSlot >= fromSlot) _prices.pop();
        _prices.push(GridPrices(fromSlot, importPrice, exportPrice));
        emit GridPricesSet(fromSlot, importPrice, exportPrice);
    }

    /// @notice A slot is final `delayMinutes` after it ends.
    /// @dev Requirements: caller has the market-operator role; `delayMinutes ≤ MAX_FINALITY_DELAY_MINUTES`.
    function setFinalityDelay(uint32 delayMinutes) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        _setFinalityDelay(delayMinutes);
    }

    // ------------------------------------------------------------------- settlement

    /// @notice Settle `members` for `slot` (see the contract notes); members settled for the
    /// slot before are skipped, so a repeated call changes nothing.
    /// @return settled Number of members settled by this call.
    /// @dev Requirements: the slot is final; a treasury is set; grid prices are in force for
    /// the slot; an auction slot with open orders was cleared (the market's `release`).
    /// Anyone may call.
    function settle(uint32 slot, address[] calldata members) external returns (uint256 settled) {
        uint256 finalAt = finalTime(slot);
        if (block.timestamp < finalAt) revert SlotNotFinal(slot, finalAt, block.timestamp);
        if (treasury == address(0)) revert TreasuryNotSet();
        GridPrices memory prices = gridPricesAt(slot);
        _indexAssets();
        for (uint256 i = 0; i < members.length; ++i) {
            if (_settled[members[i]][slot]) continue;
            _settleMember(members[i], slot, prices);
            ++settled;
        }
    }

    /// @notice Collect what `member` owes the treasury and pay what the treasury owes it, as
    /// far as balances and allowances allow.
    /// @dev Requirements: a treasury is set. Anyone may call.
    function settleDebts(address member) external {
        if (treasury == address(0)) revert TreasuryNotSet();
        _pay(member, 0, 0, 0);
    }

    // ------------------------------------------------------------------------ views

    /// @notice True when `member` was settled for `slot`.
    function isSettled(address member, uint32 slot) external view returns (bool) {
        return _settled[member][slot];
    }

    /// @notice When `slot` becomes final (Unix seconds).
    function finalTime(uint32 slot) public view returns (uint256) {
        return CommunityTime.slotEndTime(slot, slotMinutes) + CommunityTime.secondsOf(finalityDelayMinutes);
    }

    /// @notice The grid prices in force for `slot`; reverts with `NoGridPrices` if none.
    function gridPricesAt(uint32 slot) public view returns (GridPrices memory) {
        (uint256 low, uint256 high) = (0, _prices.length);
        while (low < high) {
            uint256 middle = (low + high) / 2;
            if (_prices[middle].fromSlot <= slot) low = middle + 1;
            else high = middle;
        }
        if (low == 0) revert NoGridPrices(slot);
        return _prices[low - 1];
    }

    /// @notice Band violations of `flexibility` over every settled slot.
    function violations(bytes32 flexibility) external view returns (Violations memory) {
        return _violations[flexibility];
    }

    /// @notice Meters of `member` known to the settlement (indexed from the registry).
    function metersOf(address member) external view returns (bytes32[] memory) {
        return _meters[member];
    }

    /// @notice Metered flexibilities of `member` known to the settlement.
    function flexibilitiesOf(address member) external view returns (MeteredFlexibility[] memory) {
        return _flexibilities[member];
    }

    // -------------------------------------------------------------------- internals

    function _setFinalityDelay(uint32 delayMinutes) private {
        if (delayMinutes > MAX_FINALITY_DELAY_MINUTES) {
            revert FinalityDelayTooLong(delayMinutes, MAX_FINALITY_DELAY_MINUTES);
        }
        finalityDelayMinutes = delayMinutes;
        emit FinalityDelaySet(delayMinutes);
    }

    /// @dev Assign meters and flexibilities registered since the last call to their members
    /// (a meter's member and a flexibility's owner never change in the registry).
    function _indexAssets() private {
        IMarketRegistry directory = IMarketRegistry(address(registry));
        bytes32[] memory meterIds = directory.meterIds();
        bytes32[] memory flexibilityIds = directory.flexibilityIds();
        if (meterIds.length == indexedMeters && flexibilityIds.length == indexedFlexibilities) return;
        for (uint256 i = indexedMeters; i < meterIds.length; ++i) {
            _meters[directory.meter(meterIds[i]).member].push(meterIds[i]);
        }
        for (uint256 i = indexedFlexibilities; i < flexibilityIds.length; ++i) {
            ICommunityRegistry.Flexibility memory flex = directory.flexibility(flexibilityIds[i]);
            if (flex.meter != bytes32(0)) {
                _flexibilities[flex.owner].push(MeteredFlexibility(flexibilityIds[i], flex.meter));
            }
        }
        (indexedMeters, indexedFlexibilities) = (meterIds.length, flexibilityIds.length);
        emit AssetsIndexed(meterIds.length, flexibilityIds.length);
    }

    function _settleMember(address member, uint32 slot, GridPrices memory prices) private {
        _settled[member][slot] = true;
        (uint64 boughtWh, uint64 soldWh, uint256 proceeds) = market.release(member, slot);
        int256 metered = _meteredWattMinutes(member, slot);
        int256 traded = int256(uint256(boughtWh)) - int256(uint256(soldWh));
        int256 imbalance = metered - traded * int256(CommunityTime.MINUTES_PER_HOUR);
        int256 amount = imbalance > 0
            ? int256(_ceilDiv(uint256(imbalance) * prices.importPrice, WATT_MINUTES_PER_KWH))
            : -int256(uint256(-imbalance) * prices.exportPrice / WATT_MINUTES_PER_KWH);
        emit MemberSettled(member, slot, traded, metered, imbalance, amount, proceeds);
        _pay(member, slot, amount, proceeds);
        _checkBands(member, slot);
    }

    function _meteredWattMinutes(address member, uint32 slot) private view returns (int256 metered) {
        bytes32[] storage meterIds = _meters[member];
        for (uint256 i = 0; i < meterIds.length; ++i) {
            (, int88 activeWattMinutes,) = ledger.slotEnergy(meterIds[i], slot);
            metered += activeWattMinutes;
        }
    }

    /// @dev Net `amount` (+ member owes the treasury) with the debts on record, pay from
    /// `proceeds` first, then through allowances; record what is left as debt or credit.
    function _pay(address member, uint32 slot, int256 amount, uint256 proceeds) private {
        int256 owed = amount + int256(debtOf[member]) - int256(creditOf[member]);
        (debtOf[member], creditOf[member]) = (0, 0);
        uint256 toTreasury;
        uint256 fromTreasury;
        if (owed > 0) {
            uint256 fromProceeds = _min(uint256(owed), proceeds);
            proceeds -= fromProceeds;
            if (fromProceeds != 0) token.safeTransfer(treasury, fromProceeds);
            toTreasury = fromProceeds + _pull(member, treasury, uint256(owed) - fromProceeds);
            debtOf[member] = uint256(owed) - toTreasury;
        } else if (owed < 0) {
            fromTreasury = _pull(treasury, member, uint256(-owed));
            creditOf[member] = uint256(-owed) - fromTreasury;
        }
        if (proceeds != 0) token.safeTransfer(member, proceeds);
        emit MemberPaid(member, slot, toTreasury, fromTreasury, proceeds, debtOf[member], creditOf[member]);
    }

    /// @dev Move as much of `amount` from `from` to `to` as `from`'s balance and allowance allow.
    function _pull(address from, address to, uint256 amount) private returns (uint256 moved) {
        if (amount == 0) return 0;
        moved = _min(amount, _min(token.balanceOf(from), token.allowance(from, address(this))));
        if (moved != 0) token.safeTransferFrom(from, to, moved);
    }

    /// @dev Record energy outside the band of each of `member`'s metered flexibilities.
    function _checkBands(address member, uint32 slot) private {
        MeteredFlexibility[] storage flexes = _flexibilities[member];
        for (uint256 i = 0; i < flexes.length; ++i) {
            (uint16 readings, int88 metered,) = ledger.slotEnergy(flexes[i].meter, slot);
            if (readings == 0) continue;
            (int64 pMinW, int64 pMaxW,) = limits.tightestBand(flexes[i].flexibility, slot);
            int256 above = int256(metered) - int256(pMaxW) * int256(uint256(readings));
            int256 below = int256(pMinW) * int256(uint256(readings)) - metered;
            uint256 outside = (above > 0 ? uint256(above) : 0) + (below > 0 ? uint256(below) : 0);
            if (outside == 0) continue;
            Violations storage record = _violations[flexes[i].flexibility];
            record.count += 1;
            record.wattMinutes += uint224(outside);
            emit BandViolation(flexes[i].flexibility, slot, member, outside, metered, readings, pMinW, pMaxW);
        }
    }

    function _ceilDiv(uint256 a, uint256 b) private pure returns (uint256) {
        return (a + b - 1) / b;
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }
}
