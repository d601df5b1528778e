// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IDynamicTariff} from "./IDynamicTariff.sol";
import {IEnergyMarket} from "./IEnergyMarket.sol";
import {IMarketLedger} from "./IMarketLedger.sol";
import {IMarketLimits} from "./IMarketLimits.sol";
import {IMarketRegistry} from "./IMarketRegistry.sol";
import {IMarketVault} from "./IMarketVault.sol";

/// @title Deposits and settlement of delivered slots: traded schedule against the meters
/// @notice **Deposits.** Every account (members and the treasury) funds a deposit here with
/// `deposit` and takes it back with `withdraw`; nobody else can move it. The market locks
/// part of a member's deposit for its orders and trades (`IMarketVault`); only the free part
/// can be withdrawn. Withdrawals work at all times, paused market or not. What a member owes
/// is taken from its free deposit; what it cannot pay is recorded as debt and collected
/// before the member can withdraw or lock anything again.
///
/// **Settlement.** Once a slot's meter data are final (the ledger's data deadline) and the
/// market finalized the slot, anyone may settle members for it, each (member, slot) once, at
/// a cost that depends only on the member's own meters and flexibilities:
/// - the member's metered energy `M` is Σ over its meters of the slot's W·min, where every
///   minute a meter did not report counts as consumption at the terms' `missingMinuteW`
///   (missing data count against the member, never as zero or as surplus);
/// - the imbalance `I = M − 60 · (bought − sold)` (W·min) is charged at the import price when
///   positive (`ceil(I · importPrice / 60000)`) — a seller that does not deliver pays what its
///   shortfall costs, covered by the collateral its sells locked;
/// - a negative imbalance earns the export price only for metered injection: at most
///   `max(0, −M)` is paid (`floor(· exportPrice / 60000)`), so energy bought and not used
///   earns nothing, and the treasury never pays for energy that did not leave the community;
/// - each flexibility's own meter is checked against its tightest band: energy above
///   `P_max · minutes` or below `P_min · minutes` is recorded as a violation and charged at
///   the penalty price, so trading around a band through another meter does not pay;
/// - the DSO's dynamic tariff (`IDynamicTariff`) of each meter's bus in the hour the slot
///   starts in is charged on that meter's positive metered energy (consumption, missing
///   minutes counted at `missingMinuteW`; `ceil(E · tariff / 60000)`); net injection is
///   neither charged nor credited. It is owed to the tariff's `payee` (the DSO's account):
///   paid from the member's free deposit into the payee's deposit, the rest recorded as
///   `tariffDebtOf` and collected, after the treasury's debt, like any debt. Slots that do not
///   start on the hour (slot lengths not dividing 60) take the tariff of the hour they start in;
/// - the trades' money moves inside the deposits: the buyer's locked `paid` leaves it, the
///   seller's `proceeds` and collateral become free. What the treasury owes and cannot pay
///   from its deposit is recorded and claimable later (`claimCredit`).
///
/// **Terms.** Import, export and penalty prices and `missingMinuteW` come from a schedule with
/// a standing default (every slot has prices); changes apply only to slots that start at
/// least `NOTICE_MINUTES` later (longer than the market's order horizon, so a slot's terms
/// are known when it is traded). The treasury account changes the same way, by the admin.
contract Settlement is CommunityRoleGuard, IMarketVault {
    using SafeERC20 for IERC20;

    /// @notice Settlement terms in force from slot `fromSlot` on. Prices in token units per
    /// kWh; `missingMinuteW` is the consumption a missing meter minute counts as.
    struct Terms {
        uint32 fromSlot;
        uint32 missingMinuteW;
        uint96 importPrice;
        uint96 exportPrice;
        uint96 penaltyPrice;
    }

    /// @notice The treasury account in force from slot `fromSlot` on.
    struct TreasuryChange {
        uint32 fromSlot;
        address treasury;
    }

    /// @notice A deposit: `free` can be withdrawn or locked, `locked` is held by the market.
    struct Account {
        uint128 free;
        uint128 locked;
    }

    /// @notice What the settlement of a slot charged members for the treasury (imbalances and
    /// penalties) and what it owed them (export credit), in token units.
    struct SlotFlows {
        uint128 charged;
        uint128 credited;
    }

    /// @notice Band violations of a flexibility over all settled slots.
    struct Violations {
        uint32 count;
        uint224 wattMinutes;
    }

    /// @notice Changes of terms and treasury apply only to slots starting this much later (two days).
    uint32 public constant NOTICE_MINUTES = uint32(2 * CommunityTime.MINUTES_PER_DAY);
    /// @notice Largest `missingMinuteW` (1 MW).
    uint32 public constant MAX_MISSING_MINUTE_W = 1_000_000;
    uint256 private constant WATT_MINUTES_PER_KWH = 1000 * CommunityTime.MINUTES_PER_HOUR;

    uint32 public immutable slotMinutes;
    IMarketLedger public immutable ledger;
    IMarketLimits public immutable limits;
    IERC20 public immutable token;
    IEnergyMarket public immutable market;
    /// @notice The DSO's dynamic tariffs charged on metered consumption.
    IDynamicTariff public immutable tariff;

    Terms[] private _terms;
    TreasuryChange[] private _treasuries;
    mapping(address account => Account) private _accounts;
    mapping(address member => mapping(uint32 slot => bool)) private _settled;
    mapping(uint32 slot => SlotFlows) private _flows;
    mapping(bytes32 flexibility => Violations) private _violations;
    /// @notice What `member` owes the treasury and could not pay yet.
    mapping(address member => uint256 amount) public debtOf;
    /// @notice What the treasury owes `member` and could not pay yet.
    mapping(address member => uint256 amount) public creditOf;
    /// @notice What `member` owes the tariff payee and could not pay yet.
    mapping(address member => uint256 amount) public tariffDebtOf;
    /// @notice Tariff charged to members in `slot`'s settlement so far (token units).
    mapping(uint32 slot => uint256 amount) public tariffCharged;

    event Deposited(address indexed account, uint256 amount, uint256 debtPaid);
    event Withdrawn(address indexed account, uint256 amount);
    event Locked(address indexed member, uint256 amount);
    event Unlocked(address indexed member, uint256 amount);
    event TermsSet(
        uint32 fromSlot, uint96 importPrice, uint96 exportPrice, uint96 penaltyPrice, uint32 missingMinuteW
    );
    event TreasurySet(uint32 fromSlot, address treasury);
    /// @notice `member`'s slot: traded net `tradedWh`, metered `meteredWattMinutes` (with
    /// `missingMinutes` counted at `missingMinuteW`), imbalance `imbalanceWattMinutes` (W·min,
    /// + = took more than it bought); `charge` and `penalty` are owed to the treasury,
    /// `credit` is owed by it.
    event MemberSettled(
        address indexed member,
        uint32 indexed slot,
        int256 tradedWh,
        int256 meteredWattMinutes,
        uint256 missingMinutes,
        int256 imbalanceWattMinutes,
        uint256 charge,
        uint256 credit,
        uint256 penalty
    );
    /// @notice Tokens moved for `member`: paid to and by the treasury, and the debts left
    /// (`debt` owed by the member, `credit` owed to it).
    event MemberPaid(
        address indexed member,
        uint32 indexed slot,
        uint256 paidToTreasury,
        uint256 paidByTreasury,
        uint256 debt,
        uint256 credit
    );
    /// @notice `member`'s meter `meter` at `bus` consumed `wattMinutes` (W·min, missing minutes
    /// counted) in `slot`, charged `charge` at the tariff `price` (token units per kWh).
    event TariffCharged(
        address indexed member,
        uint32 indexed slot,
        bytes32 indexed meter,
        uint32 bus,
        uint256 wattMinutes,
        uint96 price,
        uint256 charge
    );
    /// @notice `member`'s tariff for `slot`: `charge` in all, `paid` of it (and of earlier
    /// tariff debt) to `payee`'s deposit, `debt` still owed to the payee.
    event TariffPaid(
        address indexed member, uint32 indexed slot, address payee, uint256 charge, uint256 paid, uint256 debt
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

    /// @notice `slot` can be settled from `finalTime` (Unix s, its data deadline); it is `blockTime`.
    error SlotNotFinal(uint32 slot, uint256 finalTime, uint256 blockTime);
    /// @notice Terms and treasury can change only for slots starting at or after `earliestSlot`.
    error NoticeTooShort(uint32 fromSlot, uint256 earliestSlot);
    error ExportAboveImport(uint96 importPrice, uint96 exportPrice);
    error MissingMinutePowerTooHigh(uint32 missingMinuteW, uint32 maxW);
    /// @notice `account`'s free deposit `free` is smaller than `amount`.
    error InsufficientDeposit(address account, uint256 amount, uint256 free);
    /// @notice Only the market may lock and unlock deposits.
    error NotMarket(address account);
    error ZeroAmount();

    /// @param registry_ The community registry.
    /// @param ledger_ The measurement ledger.
    /// @param limits_ The capacity limits.
    /// @param token_ The community token.
    /// @param market_ The energy market (it must bind this contract).
    /// @param tariff_ The DSO's dynamic tariffs.
    /// @param treasury_ The community treasury account.
    /// @param defaultTerms Terms in force from the first slot on (`fromSlot` is ignored).
    constructor(
        ICommunityRegistry registry_,
        IMarketLedger ledger_,
        IMarketLimits limits_,
        IERC20 token_,
        IEnergyMarket market_,
        IDynamicTariff tariff_,
        address treasury_,
        Terms memory defaultTerms
    ) CommunityRoleGuard(registry_) {
        if (
            address(ledger_) == address(0) || address(limits_) == address(0) || address(token_) == address(0)
                || address(market_) == address(0) || address(tariff_) == address(0) || treasury_ == address(0)
        ) revert ICommunityErrors.ZeroAddress();
        slotMinutes = registry_.slotMinutes();
        (ledger, limits, token, market, tariff) = (ledger_, limits_, token_, market_, tariff_);
        defaultTerms.fromSlot = 0;
        _pushTerms(defaultTerms);
        _treasuries.push(TreasuryChange(0, treasury_));
        emit TreasurySet(0, treasury_);
    }

    modifier onlyMarket() {
        if (msg.sender != address(market)) revert NotMarket(msg.sender);
        _;
    }

    // --------------------------------------------------------------------- deposits

    /// @notice Move `amount` tokens of the caller into its deposit (approve this contract for
    /// exactly that much first); pays the caller's debts first (treasury, then tariff).
    /// @dev Requirements: `amount` > 0; the token transfer succeeds. Anyone may call.
    function deposit(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        token.safeTransferFrom(msg.sender, address(this), amount);
        _accounts[msg.sender].free += uint128(amount);
        (uint256 toTreasury, uint256 toPayee) = _collectDebts(msg.sender);
        emit Deposited(msg.sender, amount, toTreasury + toPayee);
    }

    /// @notice Take `amount` of the caller's free deposit back (works while the market is paused).
    /// @dev Requirements: `amount` > 0; after its debt is paid, the caller's free deposit
    /// covers `amount`. Anyone may call for itself.
    function withdraw(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        _collectDebts(msg.sender);
        Account storage account = _accounts[msg.sender];
        if (account.free < amount) revert InsufficientDeposit(msg.sender, amount, account.free);
        account.free -= uint128(amount);
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IMarketVault
    /// @dev Requirements: caller is the market; after its debt is paid, `member`'s free
    /// deposit covers `amount`.
    function lock(address member, uint256 amount) external onlyMarket {
        _collectDebts(member);
        Account storage account = _accounts[member];
        if (account.free < amount) revert InsufficientDeposit(member, amount, account.free);
        account.free -= uint128(amount);
        account.locked += uint128(amount);
        emit Locked(member, amount);
    }

    /// @inheritdoc IMarketVault
    /// @dev Requirements: caller is the market.
    function unlock(address member, uint256 amount) external onlyMarket {
        Account storage account = _accounts[member];
        account.locked -= uint128(amount);
        account.free += uint128(amount);
        emit Unlocked(member, amount);
    }

    /// @notice Pay `member` what the treasury owes it, as far as the treasury's deposit allows.
    /// @dev Anyone may call.
    function claimCredit(address member) external {
        _payCredit(member, treasuryAt(_currentSlot()), 0);
    }

    // ---------------------------------------------------------------- configuration

    /// @notice Settlement terms from slot `fromSlot` on; replaces any terms scheduled for
    /// `fromSlot` or later.
    /// @dev Requirements: caller has the market-operator role; `fromSlot` starts at least
    /// NOTICE_MINUTES from now; `exportPrice ≤ importPrice`; `missingMinuteW ≤ MAX_MISSING_MINUTE_W`.
    function setTerms(Terms calldata terms) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        _requireNotice(terms.fromSlot);
        while (_terms.length > 1 && _terms[_terms.length - 1].fromSlot >= terms.fromSlot) _terms.pop();
        _pushTerms(terms);
    }

    /// @notice The treasury account from slot `fromSlot` on; replaces any change scheduled
    /// for `fromSlot` or later.
    /// @dev Requirements: caller has the admin role; `treasury_` not zero; `fromSlot` starts
    /// at least NOTICE_MINUTES from now.
    function setTreasury(address treasury_, uint32 fromSlot) external onlyCommunityRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ICommunityErrors.ZeroAddress();
        _requireNotice(fromSlot);
        while (_treasuries.length > 1 && _treasuries[_treasuries.length - 1].fromSlot >= fromSlot) {
            _treasuries.pop();
        }
        _treasuries.push(TreasuryChange(fromSlot, treasury_));
        emit TreasurySet(fromSlot, treasury_);
    }

    // ------------------------------------------------------------------- settlement

    /// @notice Settle `members` for `slot` (see the contract notes); members settled for the
    /// slot before are skipped, so a repeated call changes nothing.
    /// @return settled Number of members settled by this call.
    /// @dev Requirements: the slot's data deadline has passed; the market finalized the slot.
    /// Anyone may call.
    function settle(uint32 slot, address[] calldata members) external returns (uint256 settled) {
        uint256 finalAt = finalTime(slot);
        if (block.timestamp < finalAt) revert SlotNotFinal(slot, finalAt, block.timestamp);
        Terms memory terms = termsAt(slot);
        address treasury = treasuryAt(slot);
        for (uint256 i = 0; i < members.length; ++i) {
            if (_settled[members[i]][slot]) continue;
            _settleMember(members[i], slot, terms, treasury);
            ++settled;
        }
    }

    // ------------------------------------------------------------------------ views

    /// @notice `account`'s deposit: free and locked tokens.
    function accountOf(address account) external view returns (Account memory) {
        return _accounts[account];
    }

    /// @notice True when `member` was settled for `slot`.
    function isSettled(address member, uint32 slot) external view returns (bool) {
        return _settled[member][slot];
    }

    /// @notice When `slot` can be settled (Unix seconds): the ledger's data deadline.
    function finalTime(uint32 slot) public view returns (uint256) {
        return ledger.dataDeadline(slot);
    }

    /// @notice The terms in force for `slot` (there always are some).
    function termsAt(uint32 slot) public view returns (Terms memory) {
        (uint256 low, uint256 high) = (0, _terms.length);
        while (low < high) {
            uint256 middle = (low + high) / 2;
            if (_terms[middle].fromSlot <= slot) low = middle + 1;
            else high = middle;
        }
        return _terms[low - 1];
    }

    /// @notice The treasury account in force for `slot`.
    function treasuryAt(uint32 slot) public view returns (address) {
        uint256 i = _treasuries.length;
        while (_treasuries[i - 1].fromSlot > slot) --i;
        return _treasuries[i - 1].treasury;
    }

    /// @inheritdoc IMarketVault
    function collateralPrice(uint32 slot) external view returns (uint256) {
        return termsAt(slot).importPrice;
    }

    /// @notice What the settlement of `slot` charged for and credited from the treasury so far.
    function slotFlows(uint32 slot) external view returns (SlotFlows memory) {
        return _flows[slot];
    }

    /// @notice Band violations of `flexibility` over every settled slot.
    function violations(bytes32 flexibility) external view returns (Violations memory) {
        return _violations[flexibility];
    }

    // -------------------------------------------------------------------- internals

    function _currentSlot() private view returns (uint32) {
        return uint32(CommunityTime.slotOf(CommunityTime.currentMinute(), slotMinutes));
    }

    function _requireNotice(uint32 fromSlot) private view {
        uint256 earliestMinute = CommunityTime.currentMinute() + NOTICE_MINUTES;
        uint256 earliestSlot = (earliestMinute + slotMinutes - 1) / slotMinutes;
        if (fromSlot < earliestSlot) revert NoticeTooShort(fromSlot, earliestSlot);
    }

    function _pushTerms(Terms memory terms) private {
        if (terms.exportPrice > terms.importPrice) revert ExportAboveImport(terms.importPrice, terms.exportPrice);
        if (terms.missingMinuteW > MAX_MISSING_MINUTE_W) {
            revert MissingMinutePowerTooHigh(terms.missingMinuteW, MAX_MISSING_MINUTE_W);
        }
        _terms.push(terms);
        emit TermsSet(terms.fromSlot, terms.importPrice, terms.exportPrice, terms.penaltyPrice, terms.missingMinuteW);
    }

    function _settleMember(address member, uint32 slot, Terms memory terms, address treasury) private {
        _settled[member][slot] = true;
        IEnergyMarket.Position memory held = market.release(member, slot);
        Account storage account = _accounts[member];
        account.locked -= uint128(held.paid + held.collateral);
        account.free += uint128(held.proceeds + held.collateral);

        (int256 metered, uint256 missing, uint256 tariffCharge) = _metered(member, slot, terms.missingMinuteW);
        int256 traded = int256(uint256(held.boughtWh)) - int256(uint256(held.soldWh));
        int256 imbalance = metered - traded * int256(CommunityTime.MINUTES_PER_HOUR);
        uint256 charge;
        uint256 credit;
        if (imbalance > 0) {
            charge = _ceilDiv(uint256(imbalance) * terms.importPrice, WATT_MINUTES_PER_KWH);
        } else if (imbalance < 0 && metered < 0) {
            credit = _min(uint256(-imbalance), uint256(-metered)) * terms.exportPrice / WATT_MINUTES_PER_KWH;
        }
        uint256 penalty = _checkBands(member, slot, terms);
        emit MemberSettled(member, slot, traded, metered, missing, imbalance, charge, credit, penalty);
        SlotFlows storage flows = _flows[slot];
        flows.charged += uint128(charge + penalty);
        flows.credited += uint128(credit);
        debtOf[member] += charge + penalty;
        tariffDebtOf[member] += tariffCharge;
        tariffCharged[slot] += tariffCharge;
        (uint256 paidToTreasury, uint256 paidToPayee) = _collectDebts(member);
        uint256 paidByTreasury = _payCredit(member, treasury, credit);
        emit MemberPaid(member, slot, paidToTreasury, paidByTreasury, debtOf[member], creditOf[member]);
        if (tariffCharge > 0 || paidToPayee > 0) {
            emit TariffPaid(member, slot, tariff.payee(), tariffCharge, paidToPayee, tariffDebtOf[member]);
        }
    }

    /// @dev Σ over `member`'s meters of the slot's W·min; every minute a meter did not report
    /// while it was registered counts as `missingMinuteW`. Each meter's positive energy is
    /// charged the tariff of its bus in the hour the slot starts in (`TariffCharged`).
    function _metered(address member, uint32 slot, uint32 missingMinuteW)
        private
        returns (int256 metered, uint256 missing, uint256 tariffCharge)
    {
        IMarketRegistry directory = IMarketRegistry(address(registry));
        bytes32[] memory meterIds = directory.metersOf(member);
        uint32 hour = uint32(CommunityTime.slotStartMinute(slot, slotMinutes) / CommunityTime.MINUTES_PER_HOUR);
        for (uint256 i = 0; i < meterIds.length; ++i) {
            (uint16 readings, int88 activeWattMinutes,) = ledger.slotEnergy(meterIds[i], slot);
            IMarketRegistry.RegisteredMeter memory meter = directory.meter(meterIds[i]);
            uint256 gap = _missing(meter, slot, readings);
            missing += gap;
            int256 energy = int256(activeWattMinutes) + int256(gap * missingMinuteW);
            metered += energy;
            if (energy <= 0) continue;
            uint96 price = tariff.tariffAt(meter.bus, hour);
            if (price == 0) continue;
            uint256 meterCharge = _ceilDiv(uint256(energy) * price, WATT_MINUTES_PER_KWH);
            tariffCharge += meterCharge;
            emit TariffCharged(member, slot, meterIds[i], meter.bus, uint256(energy), price, meterCharge);
        }
    }

    /// @dev Minutes of `slot` in which `meter` was registered and has no reading: those from
    /// its registration minute up to (not including) its deregistration minute.
    function _missing(IMarketRegistry.RegisteredMeter memory meter, uint32 slot, uint256 readings)
        private
        view
        returns (uint256)
    {
        uint256 from = _max(CommunityTime.slotStartMinute(slot, slotMinutes), meter.registeredMinute);
        uint256 until = CommunityTime.slotEndMinute(slot, slotMinutes);
        if (!meter.active) until = _min(until, meter.deregisteredMinute);
        uint256 expected = until > from ? until - from : 0;
        return expected > readings ? expected - readings : 0;
    }

    /// @dev Record energy outside the band of each of `member`'s flexibilities (by their own
    /// meters, missing minutes counted as `missingMinuteW`) and return its penalty.
    function _checkBands(address member, uint32 slot, Terms memory terms) private returns (uint256 penalty) {
        IMarketRegistry directory = IMarketRegistry(address(registry));
        bytes32[] memory flexibilityIds = directory.flexibilitiesOf(member);
        uint256 outsideTotal;
        for (uint256 i = 0; i < flexibilityIds.length; ++i) {
            bytes32 id = flexibilityIds[i];
            bytes32 meterId = directory.flexibility(id).meter;
            (uint16 readings, int88 recorded,) = ledger.slotEnergy(meterId, slot);
            uint256 gap = _missing(directory.meter(meterId), slot, readings);
            uint256 counted = readings + gap;
            if (counted == 0) continue;
            int256 metered = int256(recorded) + int256(gap * terms.missingMinuteW);
            (int64 pMinW, int64 pMaxW,) = limits.tightestBand(id, slot);
            int256 above = metered - int256(pMaxW) * int256(counted);
            int256 below = int256(pMinW) * int256(counted) - metered;
            uint256 outside = (above > 0 ? uint256(above) : 0) + (below > 0 ? uint256(below) : 0);
            if (outside == 0) continue;
            outsideTotal += outside;
            Violations storage record = _violations[id];
            record.count += 1;
            record.wattMinutes += uint224(outside);
            emit BandViolation(id, slot, member, outside, metered, uint16(counted), pMinW, pMaxW);
        }
        penalty = _ceilDiv(outsideTotal * terms.penaltyPrice, WATT_MINUTES_PER_KWH);
    }

    /// @dev Pay `member`'s debts from its free deposit as far as it goes: first what it owes
    /// the current treasury, then its tariff debt to the current tariff payee.
    function _collectDebts(address member) private returns (uint256 toTreasury, uint256 toPayee) {
        uint256 debt = debtOf[member];
        if (debt != 0) {
            toTreasury = _move(member, treasuryAt(_currentSlot()), debt);
            debtOf[member] = debt - toTreasury;
        }
        uint256 tariffDebt = tariffDebtOf[member];
        if (tariffDebt != 0) {
            toPayee = _move(member, tariff.payee(), tariffDebt);
            tariffDebtOf[member] = tariffDebt - toPayee;
        }
    }

    /// @dev Move up to `amount` from `from`'s free deposit to `to`'s; returns what was moved.
    function _move(address from, address to, uint256 amount) private returns (uint256 moved) {
        Account storage account = _accounts[from];
        moved = _min(amount, account.free);
        if (moved == 0) return 0;
        account.free -= uint128(moved);
        _accounts[to].free += uint128(moved);
    }

    /// @dev Add `credit` to what `treasury` owes `member` and pay it from the treasury's free deposit.
    function _payCredit(address member, address treasury, uint256 credit) private returns (uint256 paid) {
        uint256 owed = creditOf[member] + credit;
        if (owed == 0) return 0;
        Account storage source = _accounts[treasury];
        paid = _min(owed, source.free);
        creditOf[member] = owed - paid;
        if (paid == 0) return 0;
        source.free -= uint128(paid);
        _accounts[member].free += uint128(paid);
    }

    function _ceilDiv(uint256 a, uint256 b) private pure returns (uint256) {
        return (a + b - 1) / b;
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    function _max(uint256 a, uint256 b) private pure returns (uint256) {
        return a > b ? a : b;
    }
}
