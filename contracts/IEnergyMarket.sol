// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The P2P energy market of a community: types, events, errors, settlement hooks
/// @notice Quantities are energy in Wh for one delivery slot; prices are token smallest
/// units per kWh; the value of `q` Wh at price `p` is `floor(q · p / 1000)`. Load
/// convention: buying is consumption (positive power), selling is injection (negative).
/// The economic rules are written out for members in `docs/market.md`.
interface IEnergyMarket {
    enum Side {
        Buy,
        Sell
    }

    /// @notice GoodTillCancelled rests until it is filled, cancelled or its slot's gate closes;
    /// ImmediateOrCancel fills what it can now and drops the rest; FillOrKill fills all now or
    /// reverts; AllOrNone fills all at once or rests whole, and never fills in part.
    enum TimeInForce {
        GoodTillCancelled,
        ImmediateOrCancel,
        FillOrKill,
        AllOrNone
    }

    enum AssetKind {
        Meter,
        Flexibility
    }

    /// @notice None: no such order. Open: in the book. Filled: all traded. Closed: the rest
    /// was taken off the book (see the `OrderClosed` reason).
    enum OrderStatus {
        None,
        Open,
        Filled,
        Closed
    }

    enum CloseReason {
        Cancelled,
        Expired,
        ImmediateRemainder,
        MatchLimit,
        BandTightened,
        AuctionUnmatched,
        Displaced,
        Removed
    }

    /// @notice Continuous: every order is matched when it arrives (price-time priority,
    /// at the resting order's price). CallAuction: orders rest until gate closure, then one
    /// call clears the slot at a uniform price (pay-as-clear).
    enum ClearingMode {
        Continuous,
        CallAuction
    }

    /// @notice What a member asks for: `quantityWh` for delivery `slot`, tied to one of its
    /// assets (a meter or a flexibility), at most (buy) or at least (sell) `limitPrice`.
    struct OrderRequest {
        uint32 slot;
        Side side;
        TimeInForce timeInForce;
        AssetKind assetKind;
        bytes32 asset;
        uint48 quantityWh;
        uint96 limitPrice;
    }

    /// @notice An order as stored; `prev`/`next` link it into its slot and side's book;
    /// `lockPrice` is what one kWh of it locks in the owner's deposit (a buy: its limit
    /// price; a sell: the slot's collateral price).
    struct Order {
        address owner;
        uint32 slot;
        Side side;
        TimeInForce timeInForce;
        AssetKind assetKind;
        OrderStatus status;
        bytes32 asset;
        uint96 limitPrice;
        uint48 quantityWh;
        uint48 remainingWh;
        uint32 prev;
        uint32 next;
        uint96 lockPrice;
    }

    /// @notice A matched trade; `quantityWh` shrinks when it is curtailed.
    struct Trade {
        uint32 buyOrder;
        uint32 sellOrder;
        uint32 slot;
        uint48 quantityWh;
        uint96 price;
    }

    /// @notice A member's matched energy in a slot and the money its trades hold locked:
    /// `paid` for its buys (locked in its deposit), `proceeds` its buyers owe it, and the
    /// `collateral` its sells keep locked until the settlement.
    struct Position {
        uint64 boughtWh;
        uint64 soldWh;
        uint120 paid;
        bool released;
        uint128 proceeds;
        uint128 collateral;
    }

    /// @notice A flexibility's schedule in a slot: matched energy and energy in open orders.
    struct Schedule {
        uint64 matchedBuyWh;
        uint64 matchedSellWh;
        uint64 restingBuyWh;
        uint64 restingSellWh;
    }

    /// @notice The book of one slot: heads and tails of the sorted lists, their lengths and
    /// resting all-or-none orders; whether the auction was cleared and the slot finalized
    /// (trades curtailed to the bands in force; `flexCursor` flexibilities done so far).
    struct SlotBook {
        uint32 bidHead;
        uint32 askHead;
        uint32 bidTail;
        uint32 askTail;
        uint16 bids;
        uint16 asks;
        uint8 allOrNoneBids;
        uint8 allOrNoneAsks;
        bool auctionCleared;
        bool finalized;
        uint32 flexCursor;
    }

    /// @notice Order `orderId` locked `lockFor(quantityWh, lockPrice)` of its owner's deposit.
    event OrderPlaced(
        uint32 indexed orderId,
        address indexed owner,
        uint32 indexed slot,
        Side side,
        TimeInForce timeInForce,
        AssetKind assetKind,
        bytes32 asset,
        uint48 quantityWh,
        uint96 limitPrice,
        uint96 lockPrice
    );
    /// @notice Orders `buyOrder` and `sellOrder` traded `quantityWh` at `price`; `buyerRefund`
    /// of the buyer's deposit was unlocked (price below its limit, rounding).
    event TradeExecuted(
        uint32 indexed tradeId,
        uint32 indexed slot,
        uint32 indexed buyOrder,
        uint32 sellOrder,
        uint48 quantityWh,
        uint96 price,
        uint256 value,
        uint48 buyRemainingWh,
        uint48 sellRemainingWh,
        uint256 buyerRefund
    );
    /// @notice The remaining `remainingWh` of order `orderId` left the book; `refund` unlocked.
    event OrderClosed(uint32 indexed orderId, CloseReason reason, uint48 remainingWh, uint256 refund);
    /// @notice A band tightened after matching: trade `tradeId` lost `curtailedWh`.
    event TradeCurtailed(
        uint32 indexed tradeId,
        bytes32 indexed flexibility,
        uint32 indexed slot,
        uint48 curtailedWh,
        uint48 remainingWh,
        uint256 refund
    );
    event AuctionCleared(uint32 indexed slot, uint96 price, uint256 volumeWh, uint256 trades);
    /// @notice Every trade of `slot` fits the bands in force: the slot can be settled.
    event SlotFinalized(uint32 indexed slot, uint256 flexibilities);
    /// @notice The settlement took `member`'s position in `slot`.
    event PositionReleased(
        address indexed member,
        uint32 indexed slot,
        uint64 boughtWh,
        uint64 soldWh,
        uint256 paid,
        uint256 proceeds,
        uint256 collateral
    );
    event PausedSet(bool paused);
    event ClearingModeSet(ClearingMode mode);
    event GateClosureSet(uint32 leadMinutes);
    event SettlementBound(address settlement);

    /// @notice The quantity is below `minWh` or above `maxWh`.
    error InvalidQuantity(uint256 quantityWh, uint256 minWh, uint256 maxWh);
    /// @notice The limit price is 0 or not a multiple of `tick`.
    error InvalidPrice(uint256 limitPrice, uint256 tick);
    /// @notice Orders are taken only for slots starting before `horizonEnd` (Unix s); `slot`
    /// starts at `startTime`.
    error SlotBeyondHorizon(uint32 slot, uint256 startTime, uint256 horizonEnd);
    /// @notice The market is paused: no new orders (cancelling and withdrawing still work).
    error MarketPaused();
    /// @notice No settlement is bound yet, so no deposit can be locked.
    error SettlementNotBound();
    /// @notice The meter measures flexibility `flexibility`: order against the flexibility.
    error MeterMeasuresFlexibility(bytes32 meter, bytes32 flexibility);
    /// @notice No band is published for every minute of `slot`: a flexibility cannot trade it.
    error BandNotPublished(bytes32 flexibility, uint32 slot);
    /// @notice The order would trade with the owner's own open order `ownOrderId`.
    error SelfTrade(uint32 ownOrderId);
    /// @notice `member` already holds `maxOrders` open orders in `slot`.
    error TooManyOpenOrders(address member, uint32 slot, uint256 maxOrders);
    /// @notice `slot`'s `side` already holds `maxOrders` resting all-or-none orders.
    error TooManyAllOrNone(uint32 slot, Side side, uint256 maxOrders);
    /// @notice The order is still valid (its owner is a member and its asset active).
    error OrderStillValid(uint32 orderId);
    /// @notice `slot` is not finalized yet (`finalizeSlot`).
    error SlotNotFinalized(uint32 slot);
    /// @notice The clearing mode does not offer this time in force (auctions take GTC only).
    error TimeInForceNotSupported(TimeInForce timeInForce, ClearingMode mode);
    /// @notice Orders for `slot` closed at `gateClosureTime` (Unix s); it is `blockTime`.
    error GateClosed(uint32 slot, uint256 gateClosureTime, uint256 blockTime);
    /// @notice The gate of `slot` closes at `gateClosureTime` (Unix s); it is `blockTime`.
    error GateNotClosed(uint32 slot, uint256 gateClosureTime, uint256 blockTime);
    /// @notice No active asset of this kind has this id.
    error UnknownAsset(AssetKind kind, bytes32 asset);
    /// @notice `account` does not own the asset; `owner` does.
    error NotAssetOwner(address account, AssetKind kind, bytes32 asset, address owner);
    /// @notice The flexibility's schedule would reach `requestedW` (average power over the
    /// slot) beyond its band side `allowedW`.
    error BandExceeded(bytes32 flexibility, uint32 slot, int256 requestedW, int256 allowedW);
    /// @notice A fill-or-kill order could fill only `fillableWh` of `quantityWh` now.
    error FillOrKillNotFilled(uint32 slot, Side side, uint256 quantityWh, uint256 fillableWh);
    /// @notice `slot`'s `side` holds `maxOrders` open orders, none priced worse than this one.
    error BookFull(uint32 slot, Side side, uint256 maxOrders);
    error UnknownOrder(uint32 orderId);
    error NotOrderOwner(uint32 orderId, address account, address owner);
    error OrderNotOpen(uint32 orderId, OrderStatus status);
    error WrongClearingMode(ClearingMode required, ClearingMode current);
    error AuctionAlreadyCleared(uint32 slot);
    /// @notice The settlement cannot take positions of an auction slot with open orders.
    error AuctionNotCleared(uint32 slot);
    /// @notice `slot` is finalized; its trades are final.
    error SlotInSettlement(uint32 slot);
    /// @notice `slot` ends at `endTime` (Unix s); it is `blockTime`.
    error SlotNotDelivered(uint32 slot, uint256 endTime, uint256 blockTime);
    /// @notice The clearing mode can change only before the first order; `orders` were placed.
    error MarketInUse(uint256 orders);
    error GateClosureTooLong(uint32 leadMinutes, uint32 maxMinutes);
    error SettlementAlreadyBound(address settlement);
    /// @notice Only the bound settlement contract may take positions.
    error NotSettlement(address account, address settlement);
    error PositionAlreadyReleased(address member, uint32 slot);

    /// @notice Hand `member`'s position in `slot` to the settlement, which moves the money
    /// it holds locked (`paid`, `proceeds`, `collateral`) in the deposits.
    /// @dev Requirements: caller is the bound settlement; the slot has ended and is
    /// finalized; the position was not released before.
    function release(address member, uint32 slot) external returns (Position memory);

    /// @notice `member`'s matched energy and proceeds in `slot`.
    function position(address member, uint32 slot) external view returns (Position memory);

    /// @notice Length of a delivery slot in minutes (from the registry).
    function slotMinutes() external view returns (uint32);
}
