// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IEnergyMarket} from "./IEnergyMarket.sol";
import {IMarketLimits} from "./IMarketLimits.sol";
import {IMarketRegistry} from "./IMarketRegistry.sol";
import {IMarketVault} from "./IMarketVault.sol";

/// @title P2P energy market: orders per delivery slot, matching, deposits, band enforcement
/// @notice Members buy and sell energy for a delivery slot, each order tied to one of their
/// meters or flexibilities. An order locks part of its owner's deposit in the settlement
/// (`IMarketVault`): a buy its value at the limit price, a sell its collateral at the
/// slot's import price (what non-delivery costs). Locks are released on cancel, expiry and
/// curtailment; trades keep theirs until the settlement takes each position.
///
/// Bands bind flexibilities, fail-closed: a flexibility trades a slot only when a band is
/// published for every minute of it, and its schedule may not leave the slot's tightest
/// band (`CapacityLimits.tightestBand`), judged conservatively: a buy must keep
/// `matched net + open buys + quantity ≤ P_max`, a sell `matched net − open sells − quantity
/// ≥ P_min` (energy converted to average power over the slot). A meter that measures a
/// flexibility cannot trade in its place. A band tightened after matching is enforced by
/// `curtail` (anyone, any time before finalization) and, for every flexibility that traded,
/// by `finalizeSlot` after gate closure: the settlement takes no position before it, so no
/// trade becomes final outside the band in force.
///
/// No member can deny others a slot: each member holds at most `MAX_OPEN_PER_MEMBER` open
/// orders per slot; orders are at least `MIN_QUANTITY_WH` and priced on `PRICE_TICK`; a full
/// book side takes a better-priced order by displacing its worst one; an incoming order
/// visits at most `MAX_VISITS_PER_ORDER` resting orders, not counting the at most
/// `MAX_ALL_OR_NONE_PER_SIDE` all-or-none orders it skips; an order that would trade with
/// its owner's own open order is refused.
///
/// Gas is bounded: `curtail`, `expireOrders` and `finalizeSlot` do at most
/// `MAX_STEPS_PER_CALL` steps per call. Each side of a slot's book is a doubly linked list
/// sorted by price, then time; inserting takes a hint (an open order the new one goes
/// behind, from `insertionHint`) and walks forward from it.
contract EnergyMarket is IEnergyMarket, CommunityRoleGuard {
    /// @notice Most resting orders an incoming order visits (matched or cancelled).
    uint256 public constant MAX_VISITS_PER_ORDER = 16;
    /// @notice Most open orders per slot and side.
    uint256 public constant MAX_OPEN_PER_SIDE = 200;
    /// @notice Most open orders of one member in one slot (both sides).
    uint256 public constant MAX_OPEN_PER_MEMBER = 8;
    /// @notice Most resting all-or-none orders per slot and side.
    uint256 public constant MAX_ALL_OR_NONE_PER_SIDE = 8;
    /// @notice Most trades curtailed plus orders cancelled or expired per call.
    uint256 public constant MAX_STEPS_PER_CALL = 32;
    /// @notice Smallest order quantity (10 Wh).
    uint256 public constant MIN_QUANTITY_WH = 10;
    /// @notice Largest order quantity (1 GWh).
    uint256 public constant MAX_QUANTITY_WH = 1_000_000_000;
    /// @notice Limit prices are multiples of this (token units per kWh: 1e-6 token at 18 decimals).
    uint256 public constant PRICE_TICK = 1e12;
    /// @notice Orders are taken for slots that start within this many minutes (one day), so
    /// a slot's collateral price is known when it is traded (price changes need longer notice).
    uint32 public constant ORDER_HORIZON_MINUTES = uint32(CommunityTime.MINUTES_PER_DAY);
    /// @notice Longest gate-closure lead time (one day).
    uint32 public constant MAX_GATE_CLOSURE_MINUTES = uint32(CommunityTime.MINUTES_PER_DAY);

    uint256 private constant WH_PER_KWH = 1000;

    /// @inheritdoc IEnergyMarket
    uint32 public immutable slotMinutes;
    /// @notice Where bands are read.
    IMarketLimits public immutable limits;

    /// @notice How the market clears (changeable only before the first order).
    ClearingMode public clearingMode;
    /// @notice Orders for a slot close this many minutes before the slot starts.
    uint32 public gateClosureMinutes;
    /// @notice Number of orders placed; order ids are 1..orderCount.
    uint32 public orderCount;
    /// @notice Number of trades; trade ids are 1..tradeCount.
    uint32 public tradeCount;
    /// @notice True while new orders are stopped (cancelling and withdrawing still work).
    bool public paused;
    /// @notice The settlement: it holds the deposits and takes positions after delivery.
    address public settlement;

    /// @dev Per flexibility and slot: the schedule and, per side, trade ids and resting
    /// order ids in the order they happened (curtailment takes the latest first).
    struct FlexSlot {
        Schedule schedule;
        bool traded;
        uint32[] buyTrades;
        uint32[] sellTrades;
    }

    mapping(uint32 orderId => Order) private _orders;
    mapping(uint32 tradeId => Trade) private _trades;
    mapping(uint32 slot => SlotBook) private _books;
    mapping(address member => mapping(uint32 slot => Position)) private _positions;
    mapping(bytes32 flexibility => mapping(uint32 slot => FlexSlot)) private _flexSlots;
    mapping(uint32 slot => bytes32[] flexibilities) private _tradedFlexibilities;
    mapping(address member => mapping(uint32 slot => uint32[] orderIds)) private _memberOrders;

    /// @param registry_ The community registry (roles, assets, slot length).
    /// @param limits_ The capacity limits (bands).
    /// @param mode How the market clears.
    /// @param gateClosureMinutes_ Lead time of gate closure before a slot starts.
    constructor(ICommunityRegistry registry_, IMarketLimits limits_, ClearingMode mode, uint32 gateClosureMinutes_)
        CommunityRoleGuard(registry_)
    {
        if (address(limits_) == address(0)) revert ICommunityErrors.ZeroAddress();
        slotMinutes = registry_.slotMinutes();
        limits = limits_;
        _setClearingMode(mode);
        _setGateClosure(gateClosureMinutes_);
    }

    // ---------------------------------------------------------------- configuration

    /// @notice Choose how the market clears.
    /// @dev Requirements: caller has the market-operator role; no order was placed yet.
    function setClearingMode(ClearingMode mode) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        if (orderCount != 0) revert MarketInUse(orderCount);
        _setClearingMode(mode);
    }

    /// @notice Close the gate of every slot `leadMinutes` before it starts (applies to open slots too).
    /// @dev Requirements: caller has the market-operator role; `leadMinutes ≤ MAX_GATE_CLOSURE_MINUTES`.
    function setGateClosure(uint32 leadMinutes) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        _setGateClosure(leadMinutes);
    }

    /// @notice Stop (`true`) or resume new orders; cancelling, expiry, curtailment,
    /// settlement and withdrawals go on while paused.
    /// @dev Requirements: caller has the market-operator role.
    function setPaused(bool paused_) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        paused = paused_;
        emit PausedSet(paused_);
    }

    /// @notice Name the settlement contract that holds deposits and takes positions (once).
    /// @dev Requirements: caller has the admin role; `settlement_` not zero; none bound yet.
    function bindSettlement(address settlement_) external onlyCommunityRole(DEFAULT_ADMIN_ROLE) {
        if (settlement_ == address(0)) revert ICommunityErrors.ZeroAddress();
        if (settlement != address(0)) revert SettlementAlreadyBound(settlement);
        settlement = settlement_;
        emit SettlementBound(settlement_);
    }

    // ----------------------------------------------------------------------- orders

    /// @notice Place an order; in continuous mode it is matched at once against the book.
    /// @param request What to buy or sell (see `OrderRequest`).
    /// @param hint An open order of the same slot and side the new order would rest behind
    /// (`insertionHint`); 0 or a stale hint makes the contract search from the best order.
    /// @return orderId The new order's id.
    /// @dev Requirements: caller has the member role and owns the active asset (a meter
    /// that measures no flexibility, or a flexibility); the market is not paused; quantity in
    /// MIN_QUANTITY_WH..MAX_QUANTITY_WH; price a positive multiple of PRICE_TICK; the
    /// clearing mode offers the time in force (and an auction slot was not cleared yet); the
    /// slot's gate is open and the slot starts within the order horizon; the caller holds
    /// fewer than MAX_OPEN_PER_MEMBER open orders in the slot, none that this order would
    /// trade with; its free deposit covers `lockFor(quantity, lockPrice)`; a flexibility has a
    /// band published for the slot and its schedule stays inside it; a resting order fits
    /// the book; a fill-or-kill order fills entirely.
    function placeOrder(OrderRequest calldata request, uint32 hint)
        external
        onlyCommunityRole(MEMBER_ROLE)
        returns (uint32 orderId)
    {
        if (paused) revert MarketPaused();
        if (settlement == address(0)) revert SettlementNotBound();
        _checkRequest(request);
        _checkAsset(request.assetKind, request.asset, msg.sender);
        _checkMemberOrders(msg.sender, request);
        orderId = _storeOrder(request);
        if (request.assetKind == AssetKind.Flexibility) {
            _admit(request.asset, request.slot, request.side, request.quantityWh);
        }
        if (clearingMode == ClearingMode.CallAuction) {
            _rest(orderId, hint);
        } else {
            _matchIncoming(orderId, hint);
        }
    }

    /// @notice Cancel open order `orderId` and unlock what it still locks.
    /// @dev Requirements: caller owns the order; it is open; in auction mode the slot's gate is open.
    function cancelOrder(uint32 orderId) external {
        Order storage found = _orders[orderId];
        if (found.status == OrderStatus.None) revert UnknownOrder(orderId);
        if (found.owner != msg.sender) revert NotOrderOwner(orderId, msg.sender, found.owner);
        if (found.status != OrderStatus.Open) revert OrderNotOpen(orderId, found.status);
        if (clearingMode == ClearingMode.CallAuction) _requireGateOpen(found.slot);
        _close(orderId, CloseReason.Cancelled);
    }

    /// @notice Take off the book an open order whose owner is no longer a member or whose
    /// asset is no longer active; its lock returns to the owner's deposit.
    /// @dev Requirements: caller has the market-operator role; the order is open and no
    /// longer valid.
    function removeOrder(uint32 orderId) external onlyCommunityRole(MARKET_OPERATOR_ROLE) {
        Order storage found = _orders[orderId];
        if (found.status != OrderStatus.Open) revert OrderNotOpen(orderId, found.status);
        (address owner, bool active) = _assetOwner(found.assetKind, found.asset);
        if (active && owner == found.owner && registry.hasRole(MEMBER_ROLE, found.owner)) {
            revert OrderStillValid(orderId);
        }
        _close(orderId, CloseReason.Removed);
    }

    /// @notice Close up to `MAX_STEPS_PER_CALL` open orders of `slot` after its gate closed
    /// (continuous mode), best bids first, then best asks; unlocks their deposits.
    /// @return expired Number of orders closed.
    /// @dev Requirements: continuous mode; the slot's gate has closed. Anyone may call.
    function expireOrders(uint32 slot) external returns (uint256 expired) {
        if (clearingMode != ClearingMode.Continuous) {
            revert WrongClearingMode(ClearingMode.Continuous, clearingMode);
        }
        _requireGateClosed(slot);
        SlotBook storage slotBook = _books[slot];
        while (expired < MAX_STEPS_PER_CALL) {
            uint32 head = slotBook.bidHead != 0 ? slotBook.bidHead : slotBook.askHead;
            if (head == 0) break;
            _close(head, CloseReason.Expired);
            ++expired;
        }
    }

    // ----------------------------------------------------------------------- auction

    /// @notice Clear the call auction of `slot` at one price for all: the price that
    /// maximises the matched volume; among those, the one that leaves the least volume
    /// unmatched; if several remain, the midpoint of the lowest and highest (rounded down).
    /// Bids at or above it meet asks at or below it in price-time priority; every buyer pays
    /// the clearing price and gets the rest of its lock back; orders not matched (or not
    /// fully) are closed and unlocked. Bands tightened since admission are enforced when the
    /// slot is finalized.
    /// @return price The clearing price (0 when nothing matched).
    /// @return volumeWh Energy traded.
    /// @dev Requirements: call-auction mode; the slot's gate has closed; not cleared or
    /// finalized before. Anyone may call.
    function clearAuction(uint32 slot) external returns (uint96 price, uint256 volumeWh) {
        if (clearingMode != ClearingMode.CallAuction) {
            revert WrongClearingMode(ClearingMode.CallAuction, clearingMode);
        }
        _requireGateClosed(slot);
        SlotBook storage slotBook = _books[slot];
        if (slotBook.auctionCleared) revert AuctionAlreadyCleared(slot);
        slotBook.auctionCleared = true;
        price = _auctionPrice(slotBook);
        uint256 trades;
        if (price != 0) (volumeWh, trades) = _auctionMatch(slotBook, price);
        _closeBookSide(slotBook.bidHead);
        _closeBookSide(slotBook.askHead);
        (slotBook.bidHead, slotBook.askHead, slotBook.bidTail, slotBook.askTail) = (0, 0, 0, 0);
        (slotBook.bids, slotBook.asks) = (0, 0);
        emit AuctionCleared(slot, price, volumeWh, trades);
    }

    // ------------------------------------------------------------------- curtailment

    /// @notice Bring `flexibility`'s matched schedule in `slot` back inside its current band:
    /// while the matched net is above P_max, cut its latest buy trades (the last one only as
    /// far as needed); while below P_min, its latest sell trades. Buyers of curtailed energy
    /// get the trade value back, sellers the collateral of what was cut. At most
    /// `MAX_STEPS_PER_CALL` trades are looked at per call; call again while `done` is false.
    /// (Open orders beyond a tightened band are closed when they would match, and expire at
    /// gate closure.)
    /// @return curtailed Trades cut (`TradeCurtailed` events).
    /// @return done True when the schedule fits the band (or nothing is left to cut).
    /// @dev Requirements: the slot is not finalized. Anyone may call.
    function curtail(bytes32 flexibility, uint32 slot) external returns (uint256 curtailed, bool done) {
        if (_books[slot].finalized) revert SlotInSettlement(slot);
        (int256 minWh, int256 maxWh) = _bandEnergy(flexibility, slot);
        (, curtailed, done) =
            _curtailTrades(_flexSlots[flexibility][slot], flexibility, minWh, maxWh, MAX_STEPS_PER_CALL);
    }

    /// @notice After gate closure, curtail the trades of every flexibility that traded in
    /// `slot` to the band in force (as `curtail` does), at most `MAX_STEPS_PER_CALL` steps per
    /// call; when all fit, the slot is finalized and the settlement may take its positions.
    /// @return done True when the slot is finalized.
    /// @dev Requirements: the slot's gate has closed; an auction slot with open orders was
    /// cleared; the slot is not finalized yet. Anyone may call.
    function finalizeSlot(uint32 slot) external returns (bool done) {
        _requireGateClosed(slot);
        SlotBook storage slotBook = _books[slot];
        if (slotBook.finalized) revert SlotInSettlement(slot);
        if (clearingMode == ClearingMode.CallAuction && !slotBook.auctionCleared) {
            if (slotBook.bids + slotBook.asks != 0) revert AuctionNotCleared(slot);
            slotBook.auctionCleared = true;
        }
        bytes32[] storage traded = _tradedFlexibilities[slot];
        uint256 budget = MAX_STEPS_PER_CALL;
        while (slotBook.flexCursor < traded.length && budget > 0) {
            bytes32 flexibility = traded[slotBook.flexCursor];
            (int256 minWh, int256 maxWh) = _bandEnergy(flexibility, slot);
            (uint256 used,, bool fits) =
                _curtailTrades(_flexSlots[flexibility][slot], flexibility, minWh, maxWh, budget);
            budget -= used;
            if (!fits) break;
            ++slotBook.flexCursor;
        }
        done = slotBook.flexCursor == traded.length;
        if (done) {
            slotBook.finalized = true;
            emit SlotFinalized(slot, traded.length);
        }
    }

    // -------------------------------------------------------------------- settlement

    /// @inheritdoc IEnergyMarket
    function release(address member, uint32 slot) external returns (Position memory held) {
        if (msg.sender != settlement) revert NotSettlement(msg.sender, settlement);
        uint256 end = CommunityTime.slotEndTime(slot, slotMinutes);
        if (block.timestamp < end) revert SlotNotDelivered(slot, end, block.timestamp);
        if (!_books[slot].finalized) revert SlotNotFinalized(slot);
        Position storage stored = _positions[member][slot];
        if (stored.released) revert PositionAlreadyReleased(member, slot);
        stored.released = true;
        held = stored;
        emit PositionReleased(
            member, slot, held.boughtWh, held.soldWh, held.paid, held.proceeds, held.collateral
        );
    }

    // -------------------------------------------------------------------------- views

    /// @notice The order `orderId` (status None if there is none).
    function order(uint32 orderId) external view returns (Order memory) {
        return _orders[orderId];
    }

    /// @notice The trade `tradeId`.
    function trade(uint32 tradeId) external view returns (Trade memory) {
        return _trades[tradeId];
    }

    /// @inheritdoc IEnergyMarket
    function position(address member, uint32 slot) external view returns (Position memory) {
        return _positions[member][slot];
    }

    /// @notice `flexibility`'s matched and open energy in `slot`.
    function schedule(bytes32 flexibility, uint32 slot) external view returns (Schedule memory) {
        return _flexSlots[flexibility][slot].schedule;
    }

    /// @notice Heads, lengths and state of `slot`'s book.
    function book(uint32 slot) external view returns (SlotBook memory) {
        return _books[slot];
    }

    /// @notice Ids of `slot`'s open orders on `side`, best first.
    function openOrders(uint32 slot, Side side) external view returns (uint32[] memory ids) {
        SlotBook storage slotBook = _books[slot];
        ids = new uint32[](side == Side.Buy ? slotBook.bids : slotBook.asks);
        uint32 cursor = side == Side.Buy ? slotBook.bidHead : slotBook.askHead;
        for (uint256 i = 0; cursor != 0; ++i) {
            ids[i] = cursor;
            cursor = _orders[cursor].next;
        }
    }

    /// @notice The open order a new `side` order at `limitPrice` would rest behind (0: at the head).
    function insertionHint(uint32 slot, Side side, uint96 limitPrice) external view returns (uint32) {
        return _findPrevious(slot, side, limitPrice, 0);
    }

    /// @notice When orders for `slot` stop being accepted (Unix seconds).
    function gateClosureTime(uint32 slot) public view returns (uint256) {
        uint256 start = CommunityTime.slotStartTime(slot, slotMinutes);
        uint256 lead = CommunityTime.secondsOf(gateClosureMinutes);
        return start > lead ? start - lead : 0;
    }

    /// @notice Tokens `quantityWh` locks at `price` per kWh: `ceil(quantityWh · price / 1000)`.
    function lockFor(uint256 quantityWh, uint256 price) public pure returns (uint256) {
        return (quantityWh * price + WH_PER_KWH - 1) / WH_PER_KWH;
    }

    // --------------------------------------------------------- internals: admission

    function _setClearingMode(ClearingMode mode) private {
        clearingMode = mode;
        emit ClearingModeSet(mode);
    }

    function _setGateClosure(uint32 leadMinutes) private {
        if (leadMinutes > MAX_GATE_CLOSURE_MINUTES) {
            revert GateClosureTooLong(leadMinutes, MAX_GATE_CLOSURE_MINUTES);
        }
        gateClosureMinutes = leadMinutes;
        emit GateClosureSet(leadMinutes);
    }

    function _checkRequest(OrderRequest calldata request) private view {
        if (request.quantityWh < MIN_QUANTITY_WH || request.quantityWh > MAX_QUANTITY_WH) {
            revert InvalidQuantity(request.quantityWh, MIN_QUANTITY_WH, MAX_QUANTITY_WH);
        }
        if (request.limitPrice == 0 || request.limitPrice % PRICE_TICK != 0) {
            revert InvalidPrice(request.limitPrice, PRICE_TICK);
        }
        if (clearingMode == ClearingMode.CallAuction) {
            if (request.timeInForce != TimeInForce.GoodTillCancelled) {
                revert TimeInForceNotSupported(request.timeInForce, clearingMode);
            }
            // a shorter gate-closure lead can reopen the gate of a slot already cleared
            if (_books[request.slot].auctionCleared) revert AuctionAlreadyCleared(request.slot);
        }
        if (_books[request.slot].finalized) revert SlotInSettlement(request.slot);
        _requireGateOpen(request.slot);
        uint256 start = CommunityTime.slotStartTime(request.slot, slotMinutes);
        uint256 horizonEnd = block.timestamp + CommunityTime.secondsOf(ORDER_HORIZON_MINUTES);
        if (start >= horizonEnd) revert SlotBeyondHorizon(request.slot, start, horizonEnd);
    }

    /// @dev The owner of an asset and whether it is active (zero owner: no such asset).
    function _assetOwner(AssetKind kind, bytes32 asset) private view returns (address owner, bool active) {
        return IMarketRegistry(address(registry)).assetOwner(kind == AssetKind.Flexibility, asset);
    }

    function _checkAsset(AssetKind kind, bytes32 asset, address account) private view {
        (address owner, bool active) = _assetOwner(kind, asset);
        if (owner == address(0) || !active) revert UnknownAsset(kind, asset);
        if (owner != account) revert NotAssetOwner(account, kind, asset, owner);
        if (kind == AssetKind.Meter) {
            bytes32 measured = IMarketRegistry(address(registry)).flexibilityOfMeter(asset);
            if (measured != bytes32(0)) revert MeterMeasuresFlexibility(asset, measured);
        }
    }

    /// @dev At most MAX_OPEN_PER_MEMBER open orders per member and slot, none of them one
    /// the new order would trade with (an opposite order at a crossing price).
    function _checkMemberOrders(address member, OrderRequest calldata request) private view {
        uint32[] storage open = _memberOrders[member][request.slot];
        if (open.length >= MAX_OPEN_PER_MEMBER) {
            revert TooManyOpenOrders(member, request.slot, MAX_OPEN_PER_MEMBER);
        }
        for (uint256 i = 0; i < open.length; ++i) {
            Order storage own = _orders[open[i]];
            if (own.side == request.side) continue;
            bool crosses = request.side == Side.Buy
                ? request.limitPrice >= own.limitPrice
                : request.limitPrice <= own.limitPrice;
            if (crosses) revert SelfTrade(open[i]);
        }
    }

    function _storeOrder(OrderRequest calldata request) private returns (uint32 orderId) {
        orderId = ++orderCount;
        uint96 lockPrice = request.side == Side.Buy
            ? request.limitPrice
            : uint96(IMarketVault(settlement).collateralPrice(request.slot));
        Order storage stored = _orders[orderId];
        stored.owner = msg.sender;
        stored.slot = request.slot;
        stored.side = request.side;
        stored.timeInForce = request.timeInForce;
        stored.assetKind = request.assetKind;
        stored.asset = request.asset;
        stored.limitPrice = request.limitPrice;
        stored.quantityWh = request.quantityWh;
        stored.remainingWh = request.quantityWh;
        stored.lockPrice = lockPrice;
        uint256 locked = lockFor(request.quantityWh, lockPrice);
        emit OrderPlaced(
            orderId,
            msg.sender,
            request.slot,
            request.side,
            request.timeInForce,
            request.assetKind,
            request.asset,
            request.quantityWh,
            request.limitPrice,
            lockPrice
        );
        if (locked != 0) IMarketVault(settlement).lock(msg.sender, locked);
    }

    /// @dev The conservative band check of a new order; counts its quantity as open. The
    /// band must be published for every minute of the slot (fail-closed).
    function _admit(bytes32 flexibility, uint32 slot, Side side, uint256 quantityWh) private {
        (int64 pMinW, int64 pMaxW, bool published) = limits.tightestBand(flexibility, slot);
        if (!published) revert BandNotPublished(flexibility, slot);
        Schedule storage planned = _flexSlots[flexibility][slot].schedule;
        int256 matched = _net(planned);
        if (side == Side.Buy) {
            int256 reach = matched + int256(uint256(planned.restingBuyWh) + quantityWh);
            if (reach > _maxEnergyWh(pMaxW)) {
                int256 requestedW =
                    _ceilDiv(reach * int256(CommunityTime.MINUTES_PER_HOUR), int256(uint256(slotMinutes)));
                revert BandExceeded(flexibility, slot, requestedW, pMaxW);
            }
            planned.restingBuyWh += uint64(quantityWh);
        } else {
            int256 reach = matched - int256(uint256(planned.restingSellWh) + quantityWh);
            if (reach < _minEnergyWh(pMinW)) {
                int256 requestedW =
                    _floorDiv(reach * int256(CommunityTime.MINUTES_PER_HOUR), int256(uint256(slotMinutes)));
                revert BandExceeded(flexibility, slot, requestedW, pMinW);
            }
            planned.restingSellWh += uint64(quantityWh);
        }
    }

    // ---------------------------------------------------------- internals: matching

    function _matchIncoming(uint32 orderId, uint32 hint) private {
        Order storage taker = _orders[orderId];
        if (taker.timeInForce == TimeInForce.AllOrNone) {
            (uint256 fillable,) = _walk(orderId, false);
            if (fillable < taker.quantityWh) {
                _rest(orderId, hint);
                return;
            }
        }
        (, bool limitHit) = _walk(orderId, true);
        uint256 remaining = taker.remainingWh;
        if (remaining == 0) {
            taker.status = OrderStatus.Filled;
        } else if (taker.timeInForce == TimeInForce.FillOrKill || taker.timeInForce == TimeInForce.AllOrNone) {
            // an all-or-none that a dry run found fillable can only fall short here when a
            // band cancelled a resting order of the same flexibility twice: kill it as well
            revert FillOrKillNotFilled(taker.slot, taker.side, taker.quantityWh, taker.quantityWh - remaining);
        } else if (taker.timeInForce == TimeInForce.ImmediateOrCancel) {
            _close(orderId, CloseReason.ImmediateRemainder);
        } else if (limitHit) {
            _close(orderId, CloseReason.MatchLimit);
        } else {
            _rest(orderId, hint);
        }
    }

    /// @dev Walk the opposite side of the book from its best order while prices cross and
    /// match the taker (`execute`) or only count what it could fill (`!execute`). Resting
    /// all-or-none orders larger than what is left are skipped without counting a visit
    /// (there are at most MAX_ALL_OR_NONE_PER_SIDE); a resting flexibility order whose fill
    /// would leave its current band is skipped (dry run) or cancelled.
    function _walk(uint32 takerId, bool execute) private returns (uint256 filled, bool limitHit) {
        Order storage taker = _orders[takerId];
        bool takerBuys = taker.side == Side.Buy;
        SlotBook storage slotBook = _books[taker.slot];
        uint32 cursor = takerBuys ? slotBook.askHead : slotBook.bidHead;
        uint256 need = taker.remainingWh;
        bytes32[] memory pendingFlex = new bytes32[](execute ? 0 : MAX_VISITS_PER_ORDER);
        uint256[] memory pendingWh = new uint256[](execute ? 0 : MAX_VISITS_PER_ORDER);
        uint256 visits;
        while (cursor != 0 && need > 0) {
            Order storage maker = _orders[cursor];
            if (takerBuys ? maker.limitPrice > taker.limitPrice : maker.limitPrice < taker.limitPrice) break;
            uint32 next = maker.next;
            uint256 fill = _min(need, maker.remainingWh);
            if (maker.timeInForce == TimeInForce.AllOrNone && fill < maker.remainingWh) {
                cursor = next;
                continue;
            }
            if (visits == MAX_VISITS_PER_ORDER) {
                limitHit = true;
                break;
            }
            ++visits;
            if (maker.assetKind == AssetKind.Flexibility) {
                uint256 pending = execute ? 0 : _pending(pendingFlex, pendingWh, maker.asset, 0);
                if (!_fitsMatched(maker, fill, pending)) {
                    if (execute) _close(cursor, CloseReason.BandTightened);
                    cursor = next;
                    continue;
                }
                if (!execute) _pending(pendingFlex, pendingWh, maker.asset, fill);
            }
            if (execute) {
                (uint32 buyId, uint32 sellId) = takerBuys ? (takerId, cursor) : (cursor, takerId);
                _fill(buyId, sellId, fill, maker.limitPrice);
            }
            need -= fill;
            filled += fill;
            cursor = next;
        }
    }

    /// @dev Energy a dry run already assigned to `flexibility` (adds `addWh` to it).
    function _pending(bytes32[] memory flexes, uint256[] memory amounts, bytes32 flexibility, uint256 addWh)
        private
        pure
        returns (uint256)
    {
        for (uint256 i = 0; i < flexes.length; ++i) {
            if (flexes[i] == flexibility || flexes[i] == bytes32(0)) {
                flexes[i] = flexibility;
                amounts[i] += addWh;
                return amounts[i];
            }
        }
        return 0;
    }

    /// @dev Whether `order`'s flexibility stays inside its current band when `fillWh` more
    /// (plus `pendingWh` already planned) of it is matched. Matched energy only: the order
    /// was admitted with all open orders counted; this catches bands tightened since.
    function _fitsMatched(Order storage order_, uint256 fillWh, uint256 pendingWh) private view returns (bool) {
        if (order_.assetKind != AssetKind.Flexibility) return true;
        (int256 minWh, int256 maxWh) = _bandEnergy(order_.asset, order_.slot);
        int256 matched = _net(_flexSlots[order_.asset][order_.slot].schedule);
        int256 change = int256(fillWh + pendingWh);
        return order_.side == Side.Buy ? matched + change <= maxWh : matched - change >= minWh;
    }

    /// @dev The auction's clearing price (0: nothing crosses); see `clearAuction`. The
    /// candidates are the limit prices of both sides, taken in ascending order: demand at a
    /// price is every bid at or above it, supply every ask at or below it.
    function _auctionPrice(SlotBook storage slotBook) private view returns (uint96) {
        (uint96[] memory bidPrices, uint256[] memory bidWh, uint256 demand) = _sideOf(slotBook.bidHead, slotBook.bids);
        (uint96[] memory askPrices, uint256[] memory askWh,) = _sideOf(slotBook.askHead, slotBook.asks);
        uint256 supply;
        (uint256 bestVolume, uint256 bestSurplus, uint96 low, uint96 high) = (0, type(uint256).max, 0, 0);
        (uint256 nextAsk, uint256 nextBid) = (0, bidPrices.length); // bids are sorted descending
        while (nextAsk < askPrices.length || nextBid > 0) {
            uint96 candidate = nextAsk == askPrices.length
                ? bidPrices[nextBid - 1]
                : (nextBid == 0 ? askPrices[nextAsk] : _minPrice(askPrices[nextAsk], bidPrices[nextBid - 1]));
            while (nextAsk < askPrices.length && askPrices[nextAsk] <= candidate) supply += askWh[nextAsk++];
            uint256 volume = _min(demand, supply);
            uint256 surplus = demand > supply ? demand - supply : supply - demand;
            if (volume > bestVolume || (volume == bestVolume && volume != 0 && surplus < bestSurplus)) {
                (bestVolume, bestSurplus, low, high) = (volume, surplus, candidate, candidate);
            } else if (volume == bestVolume && volume != 0 && surplus == bestSurplus) {
                high = candidate;
            }
            while (nextBid > 0 && bidPrices[nextBid - 1] <= candidate) demand -= bidWh[--nextBid];
        }
        return uint96((uint256(low) + high) / 2);
    }

    /// @dev Prices and remaining energy of one side's open orders, best first, and their sum.
    function _sideOf(uint32 cursor, uint256 count)
        private
        view
        returns (uint96[] memory prices, uint256[] memory amounts, uint256 total)
    {
        prices = new uint96[](count);
        amounts = new uint256[](count);
        for (uint256 i = 0; cursor != 0; ++i) {
            Order storage open = _orders[cursor];
            (prices[i], amounts[i]) = (open.limitPrice, open.remainingWh);
            total += open.remainingWh;
            cursor = open.next;
        }
    }

    /// @dev Match bids at or above `price` with asks at or below it, best first, at `price`.
    function _auctionMatch(SlotBook storage slotBook, uint96 price) private returns (uint256 volumeWh, uint256 trades) {
        (uint32 bid, uint32 ask) = (slotBook.bidHead, slotBook.askHead);
        while (bid != 0 && ask != 0) {
            Order storage buy = _orders[bid];
            Order storage sell = _orders[ask];
            if (buy.limitPrice < price || sell.limitPrice > price) break;
            uint256 quantity = _min(buy.remainingWh, sell.remainingWh);
            uint256 remainingBefore = (uint256(buy.remainingWh) << 128) | sell.remainingWh;
            _moveToMatched(buy, quantity);
            _moveToMatched(sell, quantity);
            _recordTrade(bid, ask, quantity, price, remainingBefore);
            volumeWh += quantity;
            ++trades;
            if (buy.remainingWh == 0) bid = buy.next;
            if (sell.remainingWh == 0) ask = sell.next;
        }
    }

    /// @dev Continuous fill of `quantityWh` between two orders at `price`.
    function _fill(uint32 buyId, uint32 sellId, uint256 quantityWh, uint96 price) private {
        Order storage buy = _orders[buyId];
        Order storage sell = _orders[sellId];
        uint256 remainingBefore = (uint256(buy.remainingWh) << 128) | sell.remainingWh;
        _moveToMatched(buy, quantityWh);
        _moveToMatched(sell, quantityWh);
        _recordTrade(buyId, sellId, quantityWh, price, remainingBefore);
        if (buy.remainingWh == 0 && buy.status == OrderStatus.Open) {
            _unlink(buyId);
            buy.status = OrderStatus.Filled;
        }
        if (sell.remainingWh == 0 && sell.status == OrderStatus.Open) {
            _unlink(sellId);
            sell.status = OrderStatus.Filled;
        }
    }

    /// @dev Take `quantityWh` off the order's remainder; a flexibility's open energy becomes matched.
    function _moveToMatched(Order storage order_, uint256 quantityWh) private {
        order_.remainingWh -= uint48(quantityWh);
        if (order_.assetKind != AssetKind.Flexibility) return;
        Schedule storage planned = _flexSlots[order_.asset][order_.slot].schedule;
        if (order_.side == Side.Buy) {
            planned.restingBuyWh -= uint64(quantityWh);
            planned.matchedBuyWh += uint64(quantityWh);
        } else {
            planned.restingSellWh -= uint64(quantityWh);
            planned.matchedSellWh += uint64(quantityWh);
        }
    }

    /// @dev Store the trade and credit positions: the buyer's lock for the traded energy
    /// becomes `paid` (what it locks beyond the trade value is unlocked), the seller's
    /// collateral for it stays locked as position collateral. `remainingBefore` packs both
    /// orders' remainders before this trade (buy << 128 | sell).
    function _recordTrade(uint32 buyId, uint32 sellId, uint256 quantityWh, uint96 price, uint256 remainingBefore)
        private
    {
        Order storage buy = _orders[buyId];
        Order storage sell = _orders[sellId];
        uint32 slot = buy.slot;
        (uint256 buyBefore, uint256 sellBefore) = (remainingBefore >> 128, uint128(remainingBefore));
        uint256 value = quantityWh * price / WH_PER_KWH;
        uint256 refund = lockFor(buyBefore, buy.lockPrice) - lockFor(buyBefore - quantityWh, buy.lockPrice) - value;
        uint256 collateral = lockFor(sellBefore, sell.lockPrice) - lockFor(sellBefore - quantityWh, sell.lockPrice);
        uint32 tradeId = ++tradeCount;
        _trades[tradeId] = Trade(buyId, sellId, slot, uint48(quantityWh), price);
        Position storage buyer = _positions[buy.owner][slot];
        buyer.boughtWh += uint64(quantityWh);
        buyer.paid += uint120(value);
        Position storage seller = _positions[sell.owner][slot];
        seller.soldWh += uint64(quantityWh);
        seller.proceeds += uint128(value);
        seller.collateral += uint128(collateral);
        if (buy.assetKind == AssetKind.Flexibility) _noteTrade(buy.asset, slot).buyTrades.push(tradeId);
        if (sell.assetKind == AssetKind.Flexibility) _noteTrade(sell.asset, slot).sellTrades.push(tradeId);
        emit TradeExecuted(
            tradeId,
            slot,
            buyId,
            sellId,
            uint48(quantityWh),
            price,
            value,
            uint48(buyBefore - quantityWh),
            uint48(sellBefore - quantityWh),
            refund
        );
        if (refund != 0) IMarketVault(settlement).unlock(buy.owner, refund);
    }

    /// @dev The flexibility's slot record, listed for `finalizeSlot` at its first trade.
    function _noteTrade(bytes32 flexibility, uint32 slot) private returns (FlexSlot storage flex) {
        flex = _flexSlots[flexibility][slot];
        if (!flex.traded) {
            flex.traded = true;
            _tradedFlexibilities[slot].push(flexibility);
        }
    }

    /// @dev Take the remainder of order `orderId` off the book (if it is there), free its
    /// open energy and unlock what it locks.
    function _close(uint32 orderId, CloseReason reason) private {
        Order storage order_ = _orders[orderId];
        if (order_.status == OrderStatus.Open) _unlink(orderId);
        _closeRemainder(orderId, reason);
    }

    function _closeRemainder(uint32 orderId, CloseReason reason) private {
        Order storage order_ = _orders[orderId];
        uint48 remaining = order_.remainingWh;
        order_.status = OrderStatus.Closed;
        order_.remainingWh = 0;
        if (order_.assetKind == AssetKind.Flexibility) {
            Schedule storage planned = _flexSlots[order_.asset][order_.slot].schedule;
            if (order_.side == Side.Buy) planned.restingBuyWh -= remaining;
            else planned.restingSellWh -= remaining;
        }
        uint256 refund = lockFor(remaining, order_.lockPrice);
        emit OrderClosed(orderId, reason, remaining, refund);
        if (refund != 0) IMarketVault(settlement).unlock(order_.owner, refund);
    }

    /// @dev After an auction: every order of a side's list is filled or closed unmatched.
    function _closeBookSide(uint32 cursor) private {
        while (cursor != 0) {
            Order storage order_ = _orders[cursor];
            uint32 next = order_.next;
            (order_.prev, order_.next) = (0, 0);
            _forgetMemberOrder(order_.owner, order_.slot, cursor);
            if (order_.remainingWh == 0) order_.status = OrderStatus.Filled;
            else _closeRemainder(cursor, CloseReason.AuctionUnmatched);
            cursor = next;
        }
    }

    // ------------------------------------------------------------ internals: the book

    /// @dev Put order `orderId` into its book; a full side takes it only when it is priced
    /// strictly better than the side's worst order, which it displaces.
    function _rest(uint32 orderId, uint32 hint) private {
        Order storage order_ = _orders[orderId];
        SlotBook storage slotBook = _books[order_.slot];
        bool buys = order_.side == Side.Buy;
        if (order_.timeInForce == TimeInForce.AllOrNone) {
            uint8 resting = buys ? slotBook.allOrNoneBids : slotBook.allOrNoneAsks;
            if (resting >= MAX_ALL_OR_NONE_PER_SIDE) {
                revert TooManyAllOrNone(order_.slot, order_.side, MAX_ALL_OR_NONE_PER_SIDE);
            }
        }
        if ((buys ? slotBook.bids : slotBook.asks) >= MAX_OPEN_PER_SIDE) {
            uint32 worst = buys ? slotBook.bidTail : slotBook.askTail;
            if (!_strictlyBetter(order_.side, order_.limitPrice, _orders[worst].limitPrice)) {
                revert BookFull(order_.slot, order_.side, MAX_OPEN_PER_SIDE);
            }
            _close(worst, CloseReason.Displaced);
        }
        uint32 previous = _findPrevious(order_.slot, order_.side, order_.limitPrice, hint);
        uint32 next;
        if (previous == 0) {
            next = buys ? slotBook.bidHead : slotBook.askHead;
            if (buys) slotBook.bidHead = orderId;
            else slotBook.askHead = orderId;
        } else {
            next = _orders[previous].next;
            _orders[previous].next = orderId;
        }
        if (next != 0) _orders[next].prev = orderId;
        else if (buys) slotBook.bidTail = orderId;
        else slotBook.askTail = orderId;
        (order_.prev, order_.next, order_.status) = (previous, next, OrderStatus.Open);
        if (buys) ++slotBook.bids;
        else ++slotBook.asks;
        if (order_.timeInForce == TimeInForce.AllOrNone) {
            if (buys) ++slotBook.allOrNoneBids;
            else ++slotBook.allOrNoneAsks;
        }
        _memberOrders[order_.owner][order_.slot].push(orderId);
    }

    function _unlink(uint32 orderId) private {
        Order storage order_ = _orders[orderId];
        SlotBook storage slotBook = _books[order_.slot];
        bool buys = order_.side == Side.Buy;
        (uint32 previous, uint32 next) = (order_.prev, order_.next);
        if (previous == 0) {
            if (buys) slotBook.bidHead = next;
            else slotBook.askHead = next;
        } else {
            _orders[previous].next = next;
        }
        if (next != 0) _orders[next].prev = previous;
        else if (buys) slotBook.bidTail = previous;
        else slotBook.askTail = previous;
        (order_.prev, order_.next) = (0, 0);
        if (buys) --slotBook.bids;
        else --slotBook.asks;
        if (order_.timeInForce == TimeInForce.AllOrNone) {
            if (buys) --slotBook.allOrNoneBids;
            else --slotBook.allOrNoneAsks;
        }
        _forgetMemberOrder(order_.owner, order_.slot, orderId);
    }

    /// @dev Remove `orderId` from its owner's open orders of the slot (at most MAX_OPEN_PER_MEMBER).
    function _forgetMemberOrder(address owner, uint32 slot, uint32 orderId) private {
        uint32[] storage open = _memberOrders[owner][slot];
        for (uint256 i = 0; i < open.length; ++i) {
            if (open[i] == orderId) {
                open[i] = open[open.length - 1];
                open.pop();
                return;
            }
        }
    }

    /// @dev The last open order at a price at least as good as `limitPrice` (0: none); starts
    /// at `hint` when it is an open order of the same book that is at least as good.
    function _findPrevious(uint32 slot, Side side, uint96 limitPrice, uint32 hint) private view returns (uint32) {
        uint32 previous;
        SlotBook storage slotBook = _books[slot];
        uint32 cursor = side == Side.Buy ? slotBook.bidHead : slotBook.askHead;
        if (hint != 0) {
            Order storage hinted = _orders[hint];
            if (
                hinted.status == OrderStatus.Open && hinted.slot == slot && hinted.side == side
                    && !_strictlyBetter(side, limitPrice, hinted.limitPrice)
            ) {
                (previous, cursor) = (hint, hinted.next);
            }
        }
        while (cursor != 0 && !_strictlyBetter(side, limitPrice, _orders[cursor].limitPrice)) {
            (previous, cursor) = (cursor, _orders[cursor].next);
        }
        return previous;
    }

    // --------------------------------------------------------- internals: curtailment

    /// @dev Cut `flex`'s latest trades while its matched net leaves `[minWh, maxWh]`, within
    /// `budget` steps. Returns steps used, trades cut and whether the trades now fit (or
    /// nothing is left to cut on the side that is out).
    function _curtailTrades(FlexSlot storage flex, bytes32 flexibility, int256 minWh, int256 maxWh, uint256 budget)
        private
        returns (uint256 steps, uint256 curtailed, bool fits)
    {
        Schedule storage planned = flex.schedule;
        for (; steps < budget && _net(planned) > maxWh && flex.buyTrades.length > 0; ++steps) {
            if (_curtailLatest(flex.buyTrades, flexibility, uint256(_net(planned) - maxWh))) ++curtailed;
        }
        for (; steps < budget && _net(planned) < minWh && flex.sellTrades.length > 0; ++steps) {
            if (_curtailLatest(flex.sellTrades, flexibility, uint256(minWh - _net(planned)))) ++curtailed;
        }
        fits = (_net(planned) <= maxWh || flex.buyTrades.length == 0)
            && (_net(planned) >= minWh || flex.sellTrades.length == 0);
    }

    /// @dev Cut the latest trade of `tradeIds` by up to `excessWh`; pop it when nothing is
    /// left. Returns false when the trade was empty already (cut from its other side).
    function _curtailLatest(uint32[] storage tradeIds, bytes32 flexibility, uint256 excessWh)
        private
        returns (bool cut)
    {
        uint32 tradeId = tradeIds[tradeIds.length - 1];
        uint256 quantity = _trades[tradeId].quantityWh;
        uint256 curtailWh = _min(quantity, excessWh);
        if (curtailWh == quantity) tradeIds.pop();
        if (curtailWh == 0) return false;
        _curtail(tradeId, flexibility, curtailWh);
        return true;
    }

    /// @dev Cut `curtailWh` off a trade: the buyer gets the value back, the seller the
    /// collateral of the energy cut.
    function _curtail(uint32 tradeId, bytes32 flexibility, uint256 curtailWh) private {
        Trade storage cut = _trades[tradeId];
        Order storage buy = _orders[cut.buyOrder];
        Order storage sell = _orders[cut.sellOrder];
        uint256 before = cut.quantityWh;
        uint256 refund = before * cut.price / WH_PER_KWH - (before - curtailWh) * cut.price / WH_PER_KWH;
        cut.quantityWh = uint48(before - curtailWh);
        Position storage buyer = _positions[buy.owner][cut.slot];
        buyer.boughtWh -= uint64(curtailWh);
        buyer.paid -= uint120(refund);
        Position storage seller = _positions[sell.owner][cut.slot];
        seller.soldWh -= uint64(curtailWh);
        seller.proceeds -= uint128(refund);
        uint256 collateral = _min(seller.collateral, curtailWh * sell.lockPrice / WH_PER_KWH);
        seller.collateral -= uint128(collateral);
        if (buy.assetKind == AssetKind.Flexibility) {
            _flexSlots[buy.asset][cut.slot].schedule.matchedBuyWh -= uint64(curtailWh);
        }
        if (sell.assetKind == AssetKind.Flexibility) {
            _flexSlots[sell.asset][cut.slot].schedule.matchedSellWh -= uint64(curtailWh);
        }
        emit TradeCurtailed(tradeId, flexibility, cut.slot, uint48(curtailWh), cut.quantityWh, refund);
        IMarketVault vault = IMarketVault(settlement);
        if (refund != 0) vault.unlock(buy.owner, refund);
        if (collateral != 0) vault.unlock(sell.owner, collateral);
    }

    // ------------------------------------------------------------ internals: helpers

    function _requireGateOpen(uint32 slot) private view {
        uint256 gate = gateClosureTime(slot);
        if (block.timestamp >= gate) revert GateClosed(slot, gate, block.timestamp);
    }

    function _requireGateClosed(uint32 slot) private view {
        uint256 gate = gateClosureTime(slot);
        if (block.timestamp < gate) revert GateNotClosed(slot, gate, block.timestamp);
    }

    function _net(Schedule storage planned) private view returns (int256) {
        return int256(uint256(planned.matchedBuyWh)) - int256(uint256(planned.matchedSellWh));
    }

    /// @dev The slot energy (Wh) range the flexibility's current tightest band allows.
    function _bandEnergy(bytes32 flexibility, uint32 slot) private view returns (int256 minWh, int256 maxWh) {
        (int64 pMinW, int64 pMaxW,) = limits.tightestBand(flexibility, slot);
        (minWh, maxWh) = (_minEnergyWh(pMinW), _maxEnergyWh(pMaxW));
    }

    /// @dev Largest slot energy (Wh) whose average power is ≤ `pMaxW`: floor(P · T / 60).
    function _maxEnergyWh(int64 pMaxW) private view returns (int256) {
        return _floorDiv(int256(pMaxW) * int256(uint256(slotMinutes)), int256(CommunityTime.MINUTES_PER_HOUR));
    }

    /// @dev Smallest slot energy (Wh) whose average power is ≥ `pMinW`: ceil(P · T / 60).
    function _minEnergyWh(int64 pMinW) private view returns (int256) {
        return _ceilDiv(int256(pMinW) * int256(uint256(slotMinutes)), int256(CommunityTime.MINUTES_PER_HOUR));
    }

    function _strictlyBetter(Side side, uint96 price, uint96 than) private pure returns (bool) {
        return side == Side.Buy ? price > than : price < than;
    }

    function _floorDiv(int256 a, int256 b) private pure returns (int256 q) {
        q = a / b;
        if (a % b != 0 && (a < 0) != (b < 0)) --q;
    }

    function _ceilDiv(int256 a, int256 b) private pure returns (int256 q) {
        q = a / b;
        if (a % b != 0 && (a < 0) == (b < 0)) ++q;
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    function _minPrice(uint96 a, uint96 b) private pure returns (uint96) {
        return a < b ? a : b;
    }
}
