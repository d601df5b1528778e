// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IMarketLedger} from "./IMarketLedger.sol";
import {IMarketRegistry} from "./IMarketRegistry.sol";
import {Settlement} from "./Settlement.sol";

/// @title Transactive flexibility market (seeds/000 TFM): the DSO buys load reduction at congestion hours
/// @notice **Requirement.** The DSO posts one row of its Flexibility Requirement Table
/// (`postRequirement`): a congestion hour (Unix hour index), its load points (buses), the
/// minimum flexibility (W), the allowed payback hours, the payback cap (payback W per
/// flexibility W, ‰) and the price cap (token units per kW), and escrows the budget
/// `ceil(minW · priceCap / 1000)` from its wallet (ERC-20 `transferFrom`). Bids are taken until
/// the requirement's `bidDeadline`; the market operator clears between it and the hour's start.
///
/// **Bids.** An aggregator bids one price per kW (≤ the cap), one load point, the W it
/// offers in the congestion hour, one payback hour (an allowed one) with its payback W (at
/// most the cap times the offer), and the meters whose delivery counts. A meter backs a bid
/// only if its owner authorised the aggregator (`authorizeAggregator`, by the meter's owner),
/// it is active and registered at the bid's bus, and it backs no other bid for the same
/// congestion hour. A seeds bid spanning several congestion hours is one bid per hour here;
/// the off-chain clearing (`market.pricing.tfm`) groups them. The payback is recorded for the
/// clearing, not enforced or paid on chain.
///
/// **Clearing.** The market operator posts one fraction (ppm, 0..1e6) per bid of the
/// requirement, once: the cleared W of a bid is `floor(offeredW · ppm / 1e6)`; their sum must
/// reach the minimum W and their pay-as-bid cost `Σ floor(price · clearedW / 1000)` must fit
/// the escrow.
///
/// **Delivery and payment.** Once the meter data of the congestion hour are final (the
/// ledger's data deadline of its last slot), anyone may settle a cleared bid, once. The
/// hour is the market slots that start in it (exactly the hour when the slot length divides
/// 60). Delivered W = baseline W − metered W of the bid's meters, and the payment is
/// `floor(price · min(delivered, clearedW) / 1000)` to the aggregator's wallet: nothing for what
/// was not delivered. Metered W is the hour's average power rounded up, every missing meter
/// minute counted as the settlement's `missingMinuteW` (missing data never count as delivery).
/// Baseline W is the average power of the same meters in the same hour of day on the
/// `BASELINE_DAYS` days whose hour had ended when the requirement was posted (rounded down;
/// missing minutes count as 0 W, so silence lowers the baseline): an aggregator cannot raise
/// the baseline after it learns of the requirement, only by consuming (and paying for)
/// more every day beforehand on speculation. Limits of any baseline remain: meters chosen for
/// a baseline that happens to be high, and injection (PV) that varies with the weather.
/// An aggregator whose meters consume as in the baseline is paid nothing.
///
/// **Escrow.** The escrow is spent only on payments (at most the cleared cost); the rest goes
/// back to the DSO that posted the requirement (`refund`, anyone may call) once every cleared
/// bid is settled, or after the hour started without a clearing. Escrow in = payments + refund.
contract FlexibilityMarket is CommunityRoleGuard {
    using SafeERC20 for IERC20;

    /// @notice What the DSO posts (see the contract notes); `bidDeadline` in Unix seconds,
    /// `priceCap` in token units per kW.
    struct RequirementRequest {
        uint32 hour;
        uint64 bidDeadline;
        uint64 minW;
        uint96 priceCap;
        uint16 paybackCapPermille;
        uint32[] loadPoints;
        uint32[] paybackHours;
    }

    /// @notice A posted requirement. `baselineHour` is the latest hour of its baseline,
    /// `escrow` what the DSO escrowed, `paid` what bids were paid from it so far.
    struct Requirement {
        address dso;
        uint32 hour;
        uint32 baselineHour;
        uint16 paybackCapPermille;
        bool cleared;
        bool refunded;
        uint64 bidDeadline;
        uint64 minW;
        uint96 priceCap;
        uint128 escrow;
        uint128 paid;
        uint32 clearedBids;
        uint32 settledBids;
        uint32[] loadPoints;
        uint32[] paybackHours;
        uint32[] bids;
    }

    /// @notice What an aggregator bids (`price` in token units per kW).
    struct BidRequest {
        uint32 requirement;
        uint32 bus;
        uint96 price;
        uint64 offeredW;
        uint32 paybackHour;
        uint64 paybackW;
        bytes32[] meters;
    }

    /// @notice A bid: the request, its cleared fraction and W, and whether it was settled.
    struct Bid {
        address aggregator;
        uint32 requirement;
        uint32 bus;
        uint32 paybackHour;
        uint96 price;
        uint64 offeredW;
        uint64 paybackW;
        uint64 clearedW;
        uint32 fractionPpm;
        bool settled;
        bytes32[] meters;
    }

    /// @notice Days of the baseline (same hour of day, before the requirement was posted).
    uint256 public constant BASELINE_DAYS = 3;
    /// @notice Most load points per requirement.
    uint256 public constant MAX_LOAD_POINTS = 8;
    /// @notice Most allowed payback hours per requirement; each within a day of the congestion hour.
    uint256 public constant MAX_PAYBACK_HOURS = 8;
    /// @notice Most bids per requirement (bounds the clearing).
    uint256 public constant MAX_BIDS = 32;
    /// @notice Most meters per bid (bounds the settlement of a bid).
    uint256 public constant MAX_METERS_PER_BID = 8;
    /// @notice Largest minimum and offered power (100 MW).
    uint64 public constant MAX_POWER_W = 100_000_000;
    /// @notice Largest price cap: 1000 tokens per kW.
    uint96 public constant MAX_PRICE_CAP = 1000e18;
    /// @notice Largest payback cap: 5 W of payback per W of flexibility.
    uint16 public constant MAX_PAYBACK_CAP_PERMILLE = 5000;
    /// @notice Requirements are taken for hours starting within this many seconds (one week).
    uint256 public constant HORIZON_SECONDS = 7 * 24 * SECONDS_PER_HOUR;
    /// @notice The market operator has at least this long (s) between bid deadline and hour start.
    uint256 public constant MIN_CLEARING_SECONDS = 5 * CommunityTime.SECONDS_PER_MINUTE;
    /// @notice A fraction of 1 in ppm.
    uint32 public constant FULL_FRACTION_PPM = 1_000_000;

    uint256 private constant SECONDS_PER_HOUR = CommunityTime.SECONDS_PER_MINUTE * CommunityTime.MINUTES_PER_HOUR;
    uint256 private constant HOURS_PER_DAY = 24;
    uint256 private constant W_PER_KW = 1000;

    /// @notice Market slot length in minutes, copied from the registry.
    uint32 public immutable slotMinutes;
    /// @notice Where meter energy is read.
    IMarketLedger public immutable ledger;
    /// @notice Where the power of a missing meter minute is read.
    Settlement public immutable settlement;
    /// @notice The community token escrowed and paid.
    IERC20 public immutable token;

    /// @notice Number of requirements posted; ids are 1..requirementCount.
    uint32 public requirementCount;
    /// @notice Number of bids placed; ids are 1..bidCount.
    uint32 public bidCount;
    /// @notice The aggregator whose bids `meter` may back (set by the meter's owner; zero: none).
    mapping(bytes32 meter => address aggregator) public aggregatorOf;
    /// @notice The bid `meter` backs for congestion hour `hour` (0: none).
    mapping(bytes32 meter => mapping(uint32 hour => uint32 bidId)) public bidOfMeter;

    mapping(uint32 id => Requirement) private _requirements;
    mapping(uint32 id => Bid) private _bids;

    /// @notice `owner` let `aggregator` bid with meter `meter` (zero: withdrew the consent).
    event AggregatorAuthorized(bytes32 indexed meter, address indexed owner, address indexed aggregator);
    /// @notice `dso` posted requirement `id` and escrowed `escrow` token units.
    event RequirementPosted(
        uint32 indexed id,
        address indexed dso,
        uint32 hour,
        uint64 bidDeadline,
        uint64 minW,
        uint96 priceCap,
        uint16 paybackCapPermille,
        uint32[] loadPoints,
        uint32[] paybackHours,
        uint128 escrow
    );
    /// @notice `aggregator` bid `bidId` on requirement `requirement`.
    event BidPlaced(
        uint32 indexed bidId,
        uint32 indexed requirement,
        address indexed aggregator,
        uint32 bus,
        uint96 price,
        uint64 offeredW,
        uint32 paybackHour,
        uint64 paybackW,
        bytes32[] meters
    );
    /// @notice Requirement `id` was cleared: `procuredW` in all at pay-as-bid `cost`.
    event RequirementCleared(uint32 indexed id, uint256 procuredW, uint256 cost);
    /// @notice Bid `bidId` was cleared at `fractionPpm` of its offer: `clearedW`.
    event BidCleared(uint32 indexed bidId, uint32 indexed requirement, uint32 fractionPpm, uint64 clearedW);
    /// @notice Bid `bidId` was settled: its meters' baseline and metered average W, the W
    /// delivered (0 when negative, at most the cleared W) and the `payment` to `aggregator`.
    event BidSettled(
        uint32 indexed bidId,
        uint32 indexed requirement,
        address indexed aggregator,
        int256 baselineW,
        int256 meteredW,
        uint256 deliveredW,
        uint256 payment
    );
    /// @notice What requirement `id` did not spend went back to `dso`.
    event EscrowRefunded(uint32 indexed id, address indexed dso, uint256 amount);

    /// @notice `account` is not the owner `owner` of meter `meter`.
    error NotMeterOwner(bytes32 meter, address account, address owner);
    /// @notice `count` load points; 1..`maxCount` are taken.
    error InvalidLoadPointCount(uint256 count, uint256 maxCount);
    /// @notice `count` payback hours; at most `maxCount` are taken.
    error TooManyPaybackHours(uint256 count, uint256 maxCount);
    /// @notice Payback hour `paybackHour` is the congestion hour `hour` or more than a day from it.
    error InvalidPaybackHour(uint32 paybackHour, uint32 hour);
    /// @notice Congestion hour `hour` starts at `hourStart`; hours starting after the block
    /// time and by `horizonEnd` (Unix s) are taken.
    error HourOutOfRange(uint32 hour, uint256 hourStart, uint256 horizonEnd);
    /// @notice `bidDeadline` must be after the block time `blockTime` and by `latest` (Unix s).
    error InvalidBidDeadline(uint64 bidDeadline, uint256 blockTime, uint256 latest);
    /// @notice A power of `powerW` W; 1..`maxW` are taken.
    error InvalidPower(uint64 powerW, uint64 maxW);
    /// @notice A price cap of `priceCap` (units per kW); 1..`maxPriceCap` are taken.
    error InvalidPriceCap(uint96 priceCap, uint96 maxPriceCap);
    /// @notice A payback cap of `paybackCapPermille` ‰; at most `maxPermille` are taken.
    error InvalidPaybackCap(uint16 paybackCapPermille, uint16 maxPermille);
    /// @notice No requirement `id` was posted.
    error UnknownRequirement(uint32 id);
    /// @notice No bid `bidId` was placed.
    error UnknownBid(uint32 bidId);
    /// @notice Bids on requirement `id` were taken until `bidDeadline` (Unix s); it is `blockTime`.
    error BiddingClosed(uint32 id, uint64 bidDeadline, uint256 blockTime);
    /// @notice Requirement `id` has `maxBids` bids already.
    error TooManyBids(uint32 id, uint256 maxBids);
    /// @notice A bid price of `price`; 1..`priceCap` (units per kW) are taken.
    error InvalidBidPrice(uint96 price, uint96 priceCap);
    /// @notice Bus `bus` is not a load point of the requirement.
    error NotALoadPoint(uint32 bus);
    /// @notice Hour `paybackHour` is not an allowed payback hour of the requirement.
    error PaybackHourNotAllowed(uint32 paybackHour);
    /// @notice `paybackW` is more than the cap allows: `maxW`.
    error PaybackAboveCap(uint64 paybackW, uint256 maxW);
    /// @notice `count` meters; 1..`maxCount` are taken.
    error InvalidMeterCount(uint256 count, uint256 maxCount);
    /// @notice Meter `meter` is at bus `meterBus`, not at the bid's bus `bus`.
    error MeterNotAtBus(bytes32 meter, uint32 meterBus, uint32 bus);
    /// @notice The owner of `meter` did not authorise `aggregator`.
    error AggregatorNotAuthorized(bytes32 meter, address aggregator);
    /// @notice `meter` backs bid `bidId` for congestion hour `hour` already.
    error MeterAlreadyBid(bytes32 meter, uint32 hour, uint32 bidId);
    /// @notice Requirement `id` was cleared already; a clearing is final.
    error AlreadyCleared(uint32 id);
    /// @notice Requirement `id` is cleared from `opensAt` until `closesAt` (Unix s); it is `blockTime`.
    error ClearingWindowClosed(uint32 id, uint256 opensAt, uint256 closesAt, uint256 blockTime);
    /// @notice `given` fractions for requirement `id`, which has `expected` bids.
    error FractionCountMismatch(uint32 id, uint256 expected, uint256 given);
    /// @notice Fraction `index` is `fractionPpm`, above 1e6.
    error FractionOutOfRange(uint256 index, uint32 fractionPpm);
    /// @notice The clearing procures `procuredW` of the `neededW` requirement `id` asks for.
    error RequirementNotMet(uint32 id, uint256 procuredW, uint256 neededW);
    /// @notice The clearing costs `cost`, more than requirement `id`'s escrow `escrow`.
    error BudgetExceeded(uint32 id, uint256 cost, uint256 escrow);
    /// @notice Bid `bidId` was not cleared (or cleared at 0 W): there is nothing to settle.
    error BidNotCleared(uint32 bidId);
    /// @notice Bid `bidId` was settled already; a bid is paid once.
    error BidAlreadySettled(uint32 bidId);
    /// @notice Congestion hour `hour` is final (its meter data) from `finalTime`; it is `blockTime`.
    error HourNotFinal(uint32 hour, uint256 finalTime, uint256 blockTime);
    /// @notice Requirement `id` was refunded already.
    error AlreadyRefunded(uint32 id);
    /// @notice `unsettled` cleared bids of requirement `id` are not settled yet.
    error BidsNotSettled(uint32 id, uint256 unsettled);
    /// @notice Requirement `id` was not cleared and can still be until `closesAt` (Unix s).
    error ClearingStillOpen(uint32 id, uint256 closesAt, uint256 blockTime);

    /// @param registry_ The community registry.
    /// @param ledger_ The measurement ledger.
    /// @param settlement_ The settlement (its `missingMinuteW`).
    /// @param token_ The community token.
    constructor(ICommunityRegistry registry_, IMarketLedger ledger_, Settlement settlement_, IERC20 token_)
        CommunityRoleGuard(registry_)
    {
        if (address(ledger_) == address(0) || address(settlement_) == address(0) || address(token_) == address(0)) {
            revert ICommunityErrors.ZeroAddress();
        }
        slotMinutes = registry_.slotMinutes();
        (ledger, settlement, token) = (ledger_, settlement_, token_);
    }

    // ------------------------------------------------------------------ members

    /// @notice Let `aggregator` bid with the caller's meter `meter` (zero withdraws the
    /// consent; bids placed before keep their meters).
    /// @dev Requirements: caller has the member role and owns `meter` (registered).
    function authorizeAggregator(bytes32 meter, address aggregator) external onlyCommunityRole(MEMBER_ROLE) {
        address owner = _directory().meter(meter).member;
        if (owner != msg.sender) revert NotMeterOwner(meter, msg.sender, owner);
        aggregatorOf[meter] = aggregator;
        emit AggregatorAuthorized(meter, msg.sender, aggregator);
    }

    // --------------------------------------------------------------------- DSO

    /// @notice Post a requirement and escrow its budget `ceil(minW · priceCap / 1000)` from
    /// the caller's wallet (approve this contract first).
    /// @return id The requirement's id.
    /// @dev Requirements: caller has the DSO role; the hour starts after the block time and
    /// within HORIZON_SECONDS; the bid deadline is after the block time and at least
    /// MIN_CLEARING_SECONDS before the hour; 1..MAX_LOAD_POINTS load points; at most
    /// MAX_PAYBACK_HOURS payback hours, each within a day of the hour and not the hour;
    /// 1 ≤ minW ≤ MAX_POWER_W; 1 ≤ priceCap ≤ MAX_PRICE_CAP; payback cap ≤
    /// MAX_PAYBACK_CAP_PERMILLE; the token transfer succeeds.
    function postRequirement(RequirementRequest calldata request)
        external
        onlyCommunityRole(DSO_ROLE)
        returns (uint32 id)
    {
        _checkRequirement(request);
        uint128 escrow = uint128(_ceilDiv(uint256(request.minW) * request.priceCap, W_PER_KW));
        id = ++requirementCount;
        Requirement storage stored = _requirements[id];
        stored.dso = msg.sender;
        stored.hour = request.hour;
        stored.baselineHour = _baselineHour(request.hour);
        stored.paybackCapPermille = request.paybackCapPermille;
        stored.bidDeadline = request.bidDeadline;
        stored.minW = request.minW;
        stored.priceCap = request.priceCap;
        stored.escrow = escrow;
        stored.loadPoints = request.loadPoints;
        stored.paybackHours = request.paybackHours;
        emit RequirementPosted(
            id,
            msg.sender,
            request.hour,
            request.bidDeadline,
            request.minW,
            request.priceCap,
            request.paybackCapPermille,
            request.loadPoints,
            request.paybackHours,
            escrow
        );
        token.safeTransferFrom(msg.sender, address(this), escrow);
    }

    // -------------------------------------------------------------- aggregators

    /// @notice Bid on a requirement (see the contract notes).
    /// @return bidId The bid's id.
    /// @dev Requirements: caller has the aggregator role; the requirement exists, its bid
    /// deadline has not passed and it has fewer than MAX_BIDS bids; 1 ≤ price ≤ its price
    /// cap; 1 ≤ offeredW ≤ MAX_POWER_W; the bus is one of its load points; unless paybackW
    /// is 0, the payback hour is an allowed one; paybackW ≤ payback cap · offeredW; 1..MAX_METERS_PER_BID meters,
    /// each active, at the bid's bus, authorised for the caller by its owner and backing no
    /// other bid for the congestion hour.
    function placeBid(BidRequest calldata request)
        external
        onlyCommunityRole(AGGREGATOR_ROLE)
        returns (uint32 bidId)
    {
        Requirement storage requirement = _requirement(request.requirement);
        if (block.timestamp >= requirement.bidDeadline) {
            revert BiddingClosed(request.requirement, requirement.bidDeadline, block.timestamp);
        }
        if (requirement.bids.length >= MAX_BIDS) revert TooManyBids(request.requirement, MAX_BIDS);
        _checkBid(requirement, request);
        bidId = ++bidCount;
        _claimMeters(request.meters, request.bus, requirement.hour, bidId);
        requirement.bids.push(bidId);
        Bid storage bid = _bids[bidId];
        bid.aggregator = msg.sender;
        bid.requirement = request.requirement;
        bid.bus = request.bus;
        bid.paybackHour = request.paybackHour;
        bid.price = request.price;
        bid.offeredW = request.offeredW;
        bid.paybackW = request.paybackW;
        bid.meters = request.meters;
        emit BidPlaced(
            bidId,
            request.requirement,
            msg.sender,
            request.bus,
            request.price,
            request.offeredW,
            request.paybackHour,
            request.paybackW,
            request.meters
        );
    }

    // ---------------------------------------------------------- market operator

    /// @notice Post the cleared fractions of requirement `id`: one per bid, in bid order (ppm).
    /// @dev Requirements: caller has the market-operator role; the requirement exists and is
    /// not cleared; its bid deadline has passed and its hour has not started; one fraction
    /// per bid, each ≤ 1e6; the cleared W reach its minimum; the pay-as-bid cost fits its escrow.
    function clear(uint32 id, uint32[] calldata fractionsPpm) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        Requirement storage requirement = _requirement(id);
        if (requirement.cleared) revert AlreadyCleared(id);
        uint256 closesAt = _hourStart(requirement.hour);
        if (block.timestamp < requirement.bidDeadline || block.timestamp >= closesAt) {
            revert ClearingWindowClosed(id, requirement.bidDeadline, closesAt, block.timestamp);
        }
        uint32[] storage bidIds = requirement.bids;
        if (fractionsPpm.length != bidIds.length) revert FractionCountMismatch(id, bidIds.length, fractionsPpm.length);
        uint256 procured = 0;
        uint256 cost = 0;
        uint32 clearedBids = 0;
        for (uint256 i = 0; i < fractionsPpm.length; ++i) {
            if (fractionsPpm[i] > FULL_FRACTION_PPM) revert FractionOutOfRange(i, fractionsPpm[i]);
            Bid storage bid = _bids[bidIds[i]];
            uint64 clearedW = uint64(uint256(bid.offeredW) * fractionsPpm[i] / FULL_FRACTION_PPM);
            (bid.fractionPpm, bid.clearedW) = (fractionsPpm[i], clearedW);
            procured += clearedW;
            cost += _payment(bid.price, clearedW);
            if (clearedW > 0) ++clearedBids;
            emit BidCleared(bidIds[i], id, fractionsPpm[i], clearedW);
        }
        if (procured < requirement.minW) revert RequirementNotMet(id, procured, requirement.minW);
        if (cost > requirement.escrow) revert BudgetExceeded(id, cost, requirement.escrow);
        requirement.cleared = true;
        requirement.clearedBids = clearedBids;
        emit RequirementCleared(id, procured, cost);
    }

    // ------------------------------------------------------- delivery, payment

    /// @notice Pay cleared bid `bidId` for the flexibility its meters delivered (see the
    /// contract notes), once.
    /// @return payment Token units paid to the aggregator.
    /// @dev Requirements: the bid exists, was cleared at more than 0 W and not settled; the
    /// congestion hour's meter data are final. Anyone may call; the payment goes to the bidder.
    function settleBid(uint32 bidId) external returns (uint256 payment) {
        Bid storage bid = _bids[bidId];
        if (bid.aggregator == address(0)) revert UnknownBid(bidId);
        if (bid.clearedW == 0) revert BidNotCleared(bidId);
        if (bid.settled) revert BidAlreadySettled(bidId);
        Requirement storage requirement = _requirements[bid.requirement];
        uint256 finalAt = finalTime(requirement.hour);
        if (block.timestamp < finalAt) revert HourNotFinal(requirement.hour, finalAt, block.timestamp);
        (int256 baselineW, int256 meteredW) = _measure(bid.meters, requirement.hour, requirement.baselineHour);
        uint256 delivered = baselineW > meteredW ? _min(uint256(baselineW - meteredW), bid.clearedW) : 0;
        payment = _payment(bid.price, delivered);
        bid.settled = true;
        requirement.settledBids += 1;
        requirement.paid += uint128(payment);
        emit BidSettled(bidId, bid.requirement, bid.aggregator, baselineW, meteredW, delivered, payment);
        if (payment > 0) token.safeTransfer(bid.aggregator, payment);
    }

    /// @notice Return what requirement `id` did not pay to the DSO that posted it.
    /// @return amount Token units returned.
    /// @dev Requirements: the requirement exists and was not refunded; if cleared, every
    /// cleared bid is settled; if not, its hour has started (it can no longer be cleared).
    /// Anyone may call; the refund goes to the requirement's DSO.
    function refund(uint32 id) external returns (uint256 amount) {
        Requirement storage requirement = _requirement(id);
        if (requirement.refunded) revert AlreadyRefunded(id);
        if (requirement.cleared) {
            uint256 unsettled = requirement.clearedBids - requirement.settledBids;
            if (unsettled > 0) revert BidsNotSettled(id, unsettled);
        } else {
            uint256 closesAt = _hourStart(requirement.hour);
            if (block.timestamp < closesAt) revert ClearingStillOpen(id, closesAt, block.timestamp);
        }
        requirement.refunded = true;
        amount = requirement.escrow - requirement.paid;
        emit EscrowRefunded(id, requirement.dso, amount);
        if (amount > 0) token.safeTransfer(requirement.dso, amount);
    }

    // --------------------------------------------------------------------- views

    /// @notice Requirement `id`; reverts with `UnknownRequirement` if there is none.
    function requirementOf(uint32 id) external view returns (Requirement memory) {
        return _requirement(id);
    }

    /// @notice Bid `bidId`; reverts with `UnknownBid` if there is none.
    function bidOf(uint32 bidId) external view returns (Bid memory) {
        if (_bids[bidId].aggregator == address(0)) revert UnknownBid(bidId);
        return _bids[bidId];
    }

    /// @notice When the meter data of Unix hour `hour` are final (Unix s): the ledger's data
    /// deadline of the last slot that starts in the hour.
    function finalTime(uint32 hour) public view returns (uint256) {
        (, uint32 last) = _slotsOf(hour);
        return ledger.dataDeadline(last);
    }

    /// @notice Baseline and metered average W of `meters` for a congestion `hour` whose
    /// baseline ends at `baselineHour` (as `settleBid` computes them).
    function measure(bytes32[] calldata meters, uint32 hour, uint32 baselineHour)
        external
        view
        returns (int256 baselineW, int256 meteredW)
    {
        if (meters.length == 0 || meters.length > MAX_METERS_PER_BID) {
            revert InvalidMeterCount(meters.length, MAX_METERS_PER_BID);
        }
        return _measure(meters, hour, baselineHour);
    }

    // ----------------------------------------------------------------- internals

    function _directory() private view returns (IMarketRegistry) {
        return IMarketRegistry(address(registry));
    }

    function _requirement(uint32 id) private view returns (Requirement storage requirement) {
        requirement = _requirements[id];
        if (requirement.dso == address(0)) revert UnknownRequirement(id);
    }

    function _checkRequirement(RequirementRequest calldata request) private view {
        uint256 hourStart = _hourStart(request.hour);
        uint256 horizonEnd = block.timestamp + HORIZON_SECONDS;
        if (hourStart <= block.timestamp || hourStart > horizonEnd) {
            revert HourOutOfRange(request.hour, hourStart, horizonEnd);
        }
        uint256 latest = hourStart - MIN_CLEARING_SECONDS;
        if (request.bidDeadline <= block.timestamp || request.bidDeadline > latest) {
            revert InvalidBidDeadline(request.bidDeadline, block.timestamp, latest);
        }
        uint256 points = request.loadPoints.length;
        if (points == 0 || points > MAX_LOAD_POINTS) revert InvalidLoadPointCount(points, MAX_LOAD_POINTS);
        uint256 paybacks = request.paybackHours.length;
        if (paybacks > MAX_PAYBACK_HOURS) revert TooManyPaybackHours(paybacks, MAX_PAYBACK_HOURS);
        for (uint256 i = 0; i < paybacks; ++i) {
            uint32 payback = request.paybackHours[i];
            uint256 distance = payback > request.hour ? payback - request.hour : request.hour - payback;
            if (distance == 0 || distance > HOURS_PER_DAY) revert InvalidPaybackHour(payback, request.hour);
        }
        if (request.minW == 0 || request.minW > MAX_POWER_W) revert InvalidPower(request.minW, MAX_POWER_W);
        if (request.priceCap == 0 || request.priceCap > MAX_PRICE_CAP) {
            revert InvalidPriceCap(request.priceCap, MAX_PRICE_CAP);
        }
        if (request.paybackCapPermille > MAX_PAYBACK_CAP_PERMILLE) {
            revert InvalidPaybackCap(request.paybackCapPermille, MAX_PAYBACK_CAP_PERMILLE);
        }
    }

    function _checkBid(Requirement storage requirement, BidRequest calldata request) private view {
        if (request.price == 0 || request.price > requirement.priceCap) {
            revert InvalidBidPrice(request.price, requirement.priceCap);
        }
        if (request.offeredW == 0 || request.offeredW > MAX_POWER_W) revert InvalidPower(request.offeredW, MAX_POWER_W);
        if (!_contains(requirement.loadPoints, request.bus)) revert NotALoadPoint(request.bus);
        if (request.paybackW > 0 && !_contains(requirement.paybackHours, request.paybackHour)) {
            revert PaybackHourNotAllowed(request.paybackHour);
        }
        uint256 maxPaybackW = uint256(request.offeredW) * requirement.paybackCapPermille / 1000;
        if (request.paybackW > maxPaybackW) revert PaybackAboveCap(request.paybackW, maxPaybackW);
        uint256 count = request.meters.length;
        if (count == 0 || count > MAX_METERS_PER_BID) revert InvalidMeterCount(count, MAX_METERS_PER_BID);
    }

    /// @dev Check each meter may back the bid and mark it as backing `bidId` for `hour`.
    function _claimMeters(bytes32[] calldata meters, uint32 bus, uint32 hour, uint32 bidId) private {
        IMarketRegistry directory = _directory();
        for (uint256 i = 0; i < meters.length; ++i) {
            bytes32 id = meters[i];
            IMarketRegistry.RegisteredMeter memory meter = directory.meter(id);
            if (!meter.active) revert ICommunityRegistry.UnknownMeter(id);
            if (meter.bus != bus) revert MeterNotAtBus(id, meter.bus, bus);
            if (aggregatorOf[id] != msg.sender) revert AggregatorNotAuthorized(id, msg.sender);
            uint32 previous = bidOfMeter[id][hour];
            if (previous != 0) revert MeterAlreadyBid(id, hour, previous);
            bidOfMeter[id][hour] = bidId;
        }
    }

    /// @dev Baseline W (average over the BASELINE_DAYS hours, missing minutes as 0 W, rounded
    /// down) and metered W (average over `hour`, missing minutes at `missingMinuteW`, rounded up).
    function _measure(bytes32[] memory meters, uint32 hour, uint32 baselineHour)
        private
        view
        returns (int256 baselineW, int256 meteredW)
    {
        (uint32 first,) = _slotsOf(hour);
        uint256 missingW = settlement.termsAt(first).missingMinuteW;
        (int256 energy, uint256 minutes_) = _hourEnergy(meters, hour, missingW);
        meteredW = -_floorDiv(-energy, minutes_);
        (int256 baselineEnergy, uint256 baselineMinutes) = (0, 0);
        for (uint256 day = 0; day < BASELINE_DAYS; ++day) {
            (int256 dayEnergy, uint256 dayMinutes) =
                _hourEnergy(meters, uint32(baselineHour - day * HOURS_PER_DAY), 0);
            baselineEnergy += dayEnergy;
            baselineMinutes += dayMinutes;
        }
        baselineW = _floorDiv(baselineEnergy, baselineMinutes);
    }

    /// @dev Σ W·min of `meters` over the slots starting in `hour`, every missing minute
    /// counted as `missingW`, and the minutes of those slots.
    function _hourEnergy(bytes32[] memory meters, uint32 hour, uint256 missingW)
        private
        view
        returns (int256 energy, uint256 minutes_)
    {
        (uint32 first, uint32 last) = _slotsOf(hour);
        minutes_ = (uint256(last) - first + 1) * slotMinutes;
        for (uint256 m = 0; m < meters.length; ++m) {
            uint256 readings = 0;
            for (uint32 slot = first; slot <= last; ++slot) {
                (uint16 count, int88 activeWattMinutes,) = ledger.slotEnergy(meters[m], slot);
                readings += count;
                energy += activeWattMinutes;
            }
            if (missingW > 0 && minutes_ > readings) energy += int256((minutes_ - readings) * missingW);
        }
    }

    /// @dev The first and last market slot that start in Unix hour `hour` (slots are at most
    /// 64 minutes: at least one starts in every hour).
    function _slotsOf(uint32 hour) private view returns (uint32 first, uint32 last) {
        uint256 startMinute = uint256(hour) * CommunityTime.MINUTES_PER_HOUR;
        first = uint32(_ceilDiv(startMinute, slotMinutes));
        last = uint32((startMinute + CommunityTime.MINUTES_PER_HOUR - 1) / slotMinutes);
    }

    /// @dev The latest hour of the baseline: the same hour of day `hour` has, on the latest
    /// day whose hour had ended before now (the posting).
    function _baselineHour(uint32 hour) private view returns (uint32) {
        uint256 currentHour = block.timestamp / SECONDS_PER_HOUR;
        uint256 days_ = _ceilDiv(uint256(hour) - currentHour + 1, HOURS_PER_DAY);
        return uint32(uint256(hour) - days_ * HOURS_PER_DAY);
    }

    function _hourStart(uint32 hour) private pure returns (uint256) {
        return uint256(hour) * SECONDS_PER_HOUR;
    }

    function _payment(uint96 price, uint256 powerW) private pure returns (uint256) {
        return uint256(price) * powerW / W_PER_KW;
    }

    function _contains(uint32[] storage values, uint32 value) private view returns (bool) {
        for (uint256 i = 0; i < values.length; ++i) {
            if (values[i] == value) return true;
        }
        return false;
    }

    function _floorDiv(int256 a, uint256 b) private pure returns (int256) {
        int256 divisor = int256(b);
        return a >= 0 ? a / divisor : -((-a + divisor - 1) / divisor);
    }

    function _ceilDiv(uint256 a, uint256 b) private pure returns (uint256) {
        return (a + b - 1) / b;
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }
}
