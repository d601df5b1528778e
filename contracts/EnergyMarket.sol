// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {CommunityRoleGuard} from "./CommunityRoleGuard.sol";
import {CommunityTime} from "./CommunityTime.sol";
import {ICommunityErrors} from "./ICommunityErrors.sol";
import {ICommunityRegistry} from "./ICommunityRegistry.sol";
import {IEnergyMarket} from "./IEnergyMarket.sol";
import {IMarketLimits} from "./IMarketLimits.sol";
import {IMarketRegistry} from "./IMarketRegistry.sol";

/// @title P2P energy market: orders per delivery slot, matching, escrow, band enforcement
/// @notice Members buy and sell energy for a delivery slot, each order tied to one of their
/// meters or flexibilities. Buyers' money is escrowed in the community token when the order
/// is placed (members approve the market) and refunded on cancel, expiry or curtailment.
/// Trades stay in escrow until the settlement takes each seller's position after delivery.
///
/// For an order tied to a flexibility the schedule may not leave the flexibility's tightest
/// band of the slot (`CapacityLimits.tightestBand`), judged conservatively: a buy must keep
/// `matched net + open buys + quantity ≤ P_max`, a sell `matched net − open sells − quantity
/// ≥ P_min` (energy converted to average power over the slot). When a band tightens after
/// matching, `curtail` cuts the flexibility's latest trades until the schedule fits and
/// cancels its latest open orders until they fit too.
///
/// Gas is bounded: an incoming order visits at most `MAX_VISITS_PER_ORDER` resting orders,
/// a slot holds at most `MAX_OPEN_PER_SIDE` open orders per side, `curtail` and
/// `expireOrders` do at most `MAX_STEPS_PER_CALL` steps per call. Each side of a slot's book
/// is a doubly linked list sorted by price, then time; inserting takes a hint (an open order
/// the new one goes behind, from `insertionHint`) and walks forward from it.
contract EnergyMarket is IEnergyMarket, CommunityRoleGuard {
    using SafeERC20 for IERC20;

    /// @notice Most resting orders an incoming order visits (matched, skipped or cancelled).
    uint256 public constant MAX_VISITS_PER_ORDER = 16;
    /// @notice Most open orders per slot and side.
    uint256 public constant MAX_OPEN_PER_SIDE = 50;
    /// @notice Most trades curtailed plus orders cancelled or expired per call.
    uint256 public constant MAX_STEPS_PER_CALL = 32;
    /// @notice Largest order quantity (1 GWh).
    uint256 public constant MAX_QUANTITY_WH = 1_000_000_000;
    /// @notice Longest gate-closure lead time (one day).
    uint32 public constant MAX_GATE_CLOSURE_MINUTES = uint32(CommunityTime.MINUTES_PER_DAY);

    uint256 private constant WH_PER_KWH = 1000;

    /// @inheritdoc IEnergyMarket
    uint32 public immutable slotMinutes;
    /// @notice The community token in which orders are escrowed.
    IERC20 public immutable token;
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
    /// @notice The settlement contract that takes positions after delivery.
    address public settlement;

    /// @dev Per flexibility and slot: the schedule and, per side, trade ids and resting
    /// order ids in the order they happened (curtailment takes the latest first).
    struct FlexSlot {
        Schedule schedule;
        uint32[] buyTrades;
        uint32[] sellTrades;
        uint32[] buyOrders;
        uint32[] sellOrders;
    }

    mapping(uint32 orderId => Order) private _orders;
    mapping(uint32 tradeId => Trade) private _trades;
    mapping(uint32 slot => SlotBook) private _books;
    mapping(address member => mapping(uint32 slot => Position)) private _positions;
    mapping(bytes32 flexibility => mapping(uint32 slot => FlexSlot)) private _flexSlots;

    /// @param registry_ The community registry (roles, assets, slot length).
    /// @param limits_ The capacity limits (bands).
    /// @param token_ The community token.
    /// @param mode How the market clears.
    /// @param gateClosureMinutes_ Lead time of gate closure before a slot starts.
    constructor(
        ICommunityRegistry registry_,
        IMarketLimits limits_,
        IERC20 token_,
        ClearingMode mode,
        uint32 gateClosureMinutes_
    ) CommunityRoleGuard(registry_) {
        if (address(limits_) == address(0) || address(token_) == address(0)) {
            revert ICommunityErrors.ZeroAddress();
        }
        slotMinutes = registry_.slotMinutes();
        limits = limits_;
        token = token_;
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

    /// @notice Name the settlement contract that may take positions (once).
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
    /// @dev Requirements: caller has the member role and owns the active asset; quantity in
    /// 1..MAX_QUANTITY_WH; price > 0; the clearing mode offers the time in force (and an
    /// auction slot was not cleared yet); the slot's gate is open; a buyer approved the market
    /// for `escrowFor(quantity, price)`; a flexibility's schedule stays inside its band; the
    /// book side is not full if it rests; a fill-or-kill order fills entirely.
    function placeOrder(OrderRequest calldata request, uint32 hint)
        external
        onlyCommunityRole(MEMBER_ROLE)
        returns (uint32 orderId)
    {
        _checkRequest(request);
        _checkAssetOwner(request.assetKind, request.asset, msg.sender);
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

    /// @notice Cancel open order `orderId` and refund what it still escrows.
    /// @dev Requirements: caller owns the order; it is open; in auction mode the slot's gate is open.
    function cancelOrder(uint32 orderId) external {
        Order storage found = _orders[orderId];
        if (found.status == OrderStatus.None) revert UnknownOrder(orderId);
        if (found.owner != msg.sender) revert NotOrderOwner(orderId, msg.sender, found.owner);
        if (found.status != OrderStatus.Open) revert OrderNotOpen(orderId, found.status);
        if (clearingMode == ClearingMode.CallAuction) _requireGateOpen(found.slot);
        _close(orderId, CloseReason.Cancelled);
    }

    /// @notice Close up to `MAX_STEPS_PER_CALL` open orders of `slot` after its gate closed
    /// (continuous mode), best bids first, then best asks; refunds buyers.
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

    /// @notice Clear the call auction of `slot` at a uniform price: the best bids meet the
    /// best asks while bid ≥ ask; the price is the midpoint of the last matched bid and ask
    /// (rounded down); every buyer pays it and is refunded the rest of its escrow; orders not
    /// matched (or not fully) are closed and refunded. A match that would push a flexibility
    /// past its current band cancels that order instead.
    /// @return price The clearing price (0 when nothing matched).
    /// @return volumeWh Energy traded.
    /// @dev Requirements: call-auction mode; the slot's gate has closed; not cleared before;
    /// settlement of the slot has not started. Anyone may call.
    function clearAuction(uint32 slot) external returns (uint96 price, uint256 volumeWh) {
        if (clearingMode != ClearingMode.CallAuction) {
            revert WrongClearingMode(ClearingMode.CallAuction, clearingMode);
        }
        _requireGateClosed(slot);
        SlotBook storage slotBook = _books[slot];
        if (slotBook.auctionCleared) revert AuctionAlreadyCleared(slot);
        if (slotBook.settling) revert SlotInSettlement(slot);
        slotBook.auctionCleared = true;

        uint256 capacity = uint256(slotBook.bids) + slotBook.asks;
        uint32[] memory buys = new uint32[](capacity);
        uint32[] memory sells = new uint32[](capacity);
        uint256[] memory quantities = new uint256[](capacity);
        uint256[] memory remainingBefore = new uint256[](capacity); // buy << 128 | sell
        uint256 pairs;
        (uint32 bid, uint32 ask) = (slotBook.bidHead, slotBook.askHead);
        uint96 lastBid;
        uint96 lastAsk;
        while (bid != 0 && ask != 0) {
            Order storage buy = _orders[bid];
            Order storage sell = _orders[ask];
            if (buy.limitPrice < sell.limitPrice) break;
            uint256 quantity = _min(buy.remainingWh, sell.remainingWh);
            if (!_fitsMatched(buy, quantity, 0)) {
                uint32 nextBid = buy.next;
                _close(bid, CloseReason.BandTightened);
                bid = nextBid;
                continue;
            }
            if (!_fitsMatched(sell, quantity, 0)) {
                uint32 nextAsk = sell.next;
                _close(ask, CloseReason.BandTightened);
                ask = nextAsk;
                continue;
            }
            (buys[pairs], sells[pairs], quantities[pairs]) = (bid, ask, quantity);
            remainingBefore[pairs] = (uint256(buy.remainingWh) << 128) | sell.remainingWh;
            ++pairs;
            _moveToMatched(buy, quantity);
            _moveToMatched(sell, quantity);
            (lastBid, lastAsk) = (buy.limitPrice, sell.limitPrice);
            if (buy.remainingWh == 0) bid = buy.next;
            if (sell.remainingWh == 0) ask = sell.next;
        }
        price = uint96((uint256(lastBid) + lastAsk) / 2);
        for (uint256 i = 0; i < pairs; ++i) {
            _recordTrade(buys[i], sells[i], quantities[i], price, remainingBefore[i]);
            volumeWh += quantities[i];
        }
        _closeBookSide(slotBook.bidHead);
        _closeBookSide(slotBook.askHead);
        (slotBook.bidHead, slotBook.askHead, slotBook.bids, slotBook.asks) = (0, 0, 0, 0);
        emit AuctionCleared(slot, price, volumeWh, pairs);
    }

    // ------------------------------------------------------------------- curtailment

    /// @notice Bring `flexibility`'s schedule in `slot` back inside its current band: while
    /// the matched net is above P_max, cut its latest buy trades (the last one only as far as
    /// needed); while below P_min, its latest sell trades; then cancel its latest open buys
    /// (sells) while matched net + open buys > P_max (− open sells < P_min). Buyers of
    /// curtailed energy are refunded at the trade price. At most `MAX_STEPS_PER_CALL` trades
    /// and orders are looked at per call; call again while `done` is false.
    /// @return curtailed Trades cut (`TradeCurtailed` events).
    /// @return cancelled Open orders cancelled (`OrderClosed` events).
    /// @return done True when the schedule and open orders fit the band (or nothing is left to cut).
    /// @dev Requirements: settlement of the slot has not started. Anyone may call.
    function curtail(bytes32 flexibility, uint32 slot)
        external
        returns (uint256 curtailed, uint256 cancelled, bool done)
    {
        if (_books[slot].settling) revert SlotInSettlement(slot);
        (int64 pMinW, int64 pMaxW,) = limits.tightestBand(flexibility, slot);
        (int256 maxWh, int256 minWh) = (_maxEnergyWh(pMaxW), _minEnergyWh(pMinW));
        FlexSlot storage flex = _flexSlots[flexibility][slot];
        Schedule storage planned = flex.schedule;
        uint256 steps; // trades and order ids looked at, whether or not they changed
        for (; steps < MAX_STEPS_PER_CALL && _net(planned) > maxWh && flex.buyTrades.length > 0; ++steps) {
            if (_curtailLatest(flex.buyTrades, flexibility, uint256(_net(planned) - maxWh))) ++curtailed;
        }
        for (; steps < MAX_STEPS_PER_CALL && _net(planned) < minWh && flex.sellTrades.length > 0; ++steps) {
            if (_curtailLatest(flex.sellTrades, flexibility, uint256(minWh - _net(planned)))) ++curtailed;
        }
        for (
            ;
            steps < MAX_STEPS_PER_CALL && _net(planned) + int256(uint256(planned.restingBuyWh)) > maxWh
                && flex.buyOrders.length > 0;
            ++steps
        ) {
            if (_cancelLatest(flex.buyOrders)) ++cancelled;
        }
        for (
            ;
            steps < MAX_STEPS_PER_CALL && _net(planned) - int256(uint256(planned.restingSellWh)) < minWh
                && flex.sellOrders.length > 0;
            ++steps
        ) {
            if (_cancelLatest(flex.sellOrders)) ++cancelled;
        }
        done = (_net(planned) <= maxWh || flex.buyTrades.length == 0)
            && (_net(planned) >= minWh || flex.sellTrades.length == 0)
            && (_net(planned) + int256(uint256(planned.restingBuyWh)) <= maxWh || flex.buyOrders.length == 0)
            && (_net(planned) - int256(uint256(planned.restingSellWh)) >= minWh || flex.sellOrders.length == 0);
    }

    // -------------------------------------------------------------------- settlement

    /// @inheritdoc IEnergyMarket
    function release(address member, uint32 slot)
        external
        returns (uint64 boughtWh, uint64 soldWh, uint256 proceeds)
    {
        if (msg.sender != settlement) revert NotSettlement(msg.sender, settlement);
        uint256 end = CommunityTime.slotEndTime(slot, slotMinutes);
        if (block.timestamp < end) revert SlotNotDelivered(slot, end, block.timestamp);
        SlotBook storage slotBook = _books[slot];
        if (clearingMode == ClearingMode.CallAuction && !slotBook.auctionCleared) {
            if (slotBook.bids + slotBook.asks != 0) revert AuctionNotCleared(slot);
            slotBook.auctionCleared = true;
        }
        slotBook.settling = true;
        Position storage held = _positions[member][slot];
        if (held.released) revert PositionAlreadyReleased(member, slot);
        held.released = true;
        (boughtWh, soldWh, proceeds) = (held.boughtWh, held.soldWh, held.proceeds);
        emit PositionReleased(member, slot, boughtWh, soldWh, proceeds);
        if (proceeds != 0) token.safeTransfer(msg.sender, proceeds);
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

    /// @notice Tokens a buy order escrows: `ceil(quantityWh · limitPrice / 1000)`.
    function escrowFor(uint256 quantityWh, uint256 limitPrice) public pure returns (uint256) {
        return (quantityWh * limitPrice + WH_PER_KWH - 1) / WH_PER_KWH;
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
        if (request.quantityWh == 0 || request.quantityWh > MAX_QUANTITY_WH) {
            revert InvalidQuantity(request.quantityWh, MAX_QUANTITY_WH);
        }
        if (request.limitPrice == 0) revert InvalidPrice(request.limitPrice);
        if (clearingMode == ClearingMode.CallAuction) {
            if (request.timeInForce != TimeInForce.GoodTillCancelled) {
                revert TimeInForceNotSupported(request.timeInForce, clearingMode);
            }
            // a shorter gate-closure lead can reopen the gate of a slot already cleared
            if (_books[request.slot].auctionCleared) revert AuctionAlreadyCleared(request.slot);
        }
        _requireGateOpen(request.slot);
    }

    function _checkAssetOwner(AssetKind kind, bytes32 asset, address account) private view {
        IMarketRegistry directory = IMarketRegistry(address(registry));
        address owner;
        bool active;
        if (kind == AssetKind.Meter) {
            try directory.meter(asset) returns (IMarketRegistry.RegisteredMeter memory found) {
                (owner, active) = (found.member, found.active);
            } catch {}
        } else {
            try directory.flexibility(asset) returns (ICommunityRegistry.Flexibility memory found) {
                (owner, active) = (found.owner, found.active);
            } catch {}
        }
        if (owner == address(0) || !active) revert UnknownAsset(kind, asset);
        if (owner != account) revert NotAssetOwner(account, kind, asset, owner);
    }

    function _storeOrder(OrderRequest calldata request) private returns (uint32 orderId) {
        orderId = ++orderCount;
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
        uint256 escrow = request.side == Side.Buy ? escrowFor(request.quantityWh, request.limitPrice) : 0;
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
            escrow
        );
        if (escrow != 0) token.safeTransferFrom(msg.sender, address(this), escrow);
    }

    /// @dev The conservative band check of a new order; counts its quantity as open.
    function _admit(bytes32 flexibility, uint32 slot, Side side, uint256 quantityWh) private {
        (int64 pMinW, int64 pMaxW,) = limits.tightestBand(flexibility, slot);
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
    /// all-or-none orders larger than what is left are skipped; a resting flexibility order
    /// whose fill would leave its current band is skipped (dry run) or cancelled.
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
            if (visits == MAX_VISITS_PER_ORDER) {
                limitHit = true;
                break;
            }
            ++visits;
            uint32 next = maker.next;
            uint256 fill = _min(need, maker.remainingWh);
            if (maker.timeInForce == TimeInForce.AllOrNone && fill < maker.remainingWh) {
                cursor = next;
                continue;
            }
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
        (int64 pMinW, int64 pMaxW,) = limits.tightestBand(order_.asset, order_.slot);
        int256 matched = _net(_flexSlots[order_.asset][order_.slot].schedule);
        int256 change = int256(fillWh + pendingWh);
        return order_.side == Side.Buy
            ? matched + change <= _maxEnergyWh(pMaxW)
            : matched - change >= _minEnergyWh(pMinW);
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

    /// @dev Store the trade, credit positions, refund the buyer's escrow beyond the trade
    /// value and beyond what its remainder still needs. `remainingBefore` packs both orders'
    /// remainders before this trade (buy << 128 | sell).
    function _recordTrade(uint32 buyId, uint32 sellId, uint256 quantityWh, uint96 price, uint256 remainingBefore)
        private
    {
        Order storage buy = _orders[buyId];
        Order storage sell = _orders[sellId];
        uint32 slot = buy.slot;
        uint256 buyRemainingBefore = remainingBefore >> 128;
        uint256 value = quantityWh * price / WH_PER_KWH;
        uint256 refund = escrowFor(buyRemainingBefore, buy.limitPrice)
            - escrowFor(buyRemainingBefore - quantityWh, buy.limitPrice) - value;
        uint32 tradeId = ++tradeCount;
        _trades[tradeId] = Trade(buyId, sellId, slot, uint48(quantityWh), price);
        _positions[buy.owner][slot].boughtWh += uint64(quantityWh);
        Position storage seller = _positions[sell.owner][slot];
        seller.soldWh += uint64(quantityWh);
        seller.proceeds += uint120(value);
        if (buy.assetKind == AssetKind.Flexibility) _flexSlots[buy.asset][slot].buyTrades.push(tradeId);
        if (sell.assetKind == AssetKind.Flexibility) _flexSlots[sell.asset][slot].sellTrades.push(tradeId);
        emit TradeExecuted(
            tradeId,
            slot,
            buyId,
            sellId,
            uint48(quantityWh),
            price,
            value,
            uint48(buyRemainingBefore - quantityWh),
            uint48(uint128(remainingBefore) - quantityWh),
            refund
        );
        if (refund != 0) token.safeTransfer(buy.owner, refund);
    }

    /// @dev Take the remainder of order `orderId` off the book (if it is there), free its
    /// open energy and refund its escrow.
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
        uint256 refund = order_.side == Side.Buy ? escrowFor(remaining, order_.limitPrice) : 0;
        emit OrderClosed(orderId, reason, remaining, refund);
        if (refund != 0) token.safeTransfer(order_.owner, refund);
    }

    /// @dev After an auction: every order of a side's list is filled or closed unmatched.
    function _closeBookSide(uint32 cursor) private {
        while (cursor != 0) {
            Order storage order_ = _orders[cursor];
            uint32 next = order_.next;
            (order_.prev, order_.next) = (0, 0);
            if (order_.remainingWh == 0) order_.status = OrderStatus.Filled;
            else _closeRemainder(cursor, CloseReason.AuctionUnmatched);
            cursor = next;
        }
    }

    // ------------------------------------------------------------ internals: the book

    function _rest(uint32 orderId, uint32 hint) private {
        Order storage order_ = _orders[orderId];
        SlotBook storage slotBook = _books[order_.slot];
        bool buys = order_.side == Side.Buy;
        if ((buys ? slotBook.bids : slotBook.asks) >= MAX_OPEN_PER_SIDE) {
            revert BookFull(order_.slot, order_.side, MAX_OPEN_PER_SIDE);
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
        (order_.prev, order_.next, order_.status) = (previous, next, OrderStatus.Open);
        if (buys) ++slotBook.bids;
        else ++slotBook.asks;
        if (order_.assetKind == AssetKind.Flexibility) {
            FlexSlot storage flex = _flexSlots[order_.asset][order_.slot];
            (buys ? flex.buyOrders : flex.sellOrders).push(orderId);
        }
    }

    function _unlink(uint32 orderId) private {
        Order storage order_ = _orders[orderId];
        SlotBook storage slotBook = _books[order_.slot];
        (uint32 previous, uint32 next) = (order_.prev, order_.next);
        if (previous == 0) {
            if (order_.side == Side.Buy) slotBook.bidHead = next;
            else slotBook.askHead = next;
        } else {
            _orders[previous].next = next;
        }
        if (next != 0) _orders[next].prev = previous;
        (order_.prev, order_.next) = (0, 0);
        if (order_.side == Side.Buy) --slotBook.bids;
        else --slotBook.asks;
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

    function _curtail(uint32 tradeId, bytes32 flexibility, uint256 curtailWh) private {
        Trade storage cut = _trades[tradeId];
        Order storage buy = _orders[cut.buyOrder];
        Order storage sell = _orders[cut.sellOrder];
        uint256 before = cut.quantityWh;
        uint256 refund = before * cut.price / WH_PER_KWH - (before - curtailWh) * cut.price / WH_PER_KWH;
        cut.quantityWh = uint48(before - curtailWh);
        _positions[buy.owner][cut.slot].boughtWh -= uint64(curtailWh);
        Position storage seller = _positions[sell.owner][cut.slot];
        seller.soldWh -= uint64(curtailWh);
        seller.proceeds -= uint120(refund);
        if (buy.assetKind == AssetKind.Flexibility) {
            _flexSlots[buy.asset][cut.slot].schedule.matchedBuyWh -= uint64(curtailWh);
        }
        if (sell.assetKind == AssetKind.Flexibility) {
            _flexSlots[sell.asset][cut.slot].schedule.matchedSellWh -= uint64(curtailWh);
        }
        emit TradeCurtailed(tradeId, flexibility, cut.slot, uint48(curtailWh), cut.quantityWh, refund);
        if (refund != 0) token.safeTransfer(buy.owner, refund);
    }

    /// @dev Pop the latest order id of `orderIds`; cancel it if it is still open.
    function _cancelLatest(uint32[] storage orderIds) private returns (bool cancelled) {
        uint32 orderId = orderIds[orderIds.length - 1];
        orderIds.pop();
        cancelled = _orders[orderId].status == OrderStatus.Open;
        if (cancelled) _close(orderId, CloseReason.BandTightened);
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
}
