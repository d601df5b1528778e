"""What the API reads from events, kept current by the contracts' event followers.

The chain is the only source: every view here is a projection of the community's events
(orders and trades, published bands, DSO limitations, settlement statements and band
violations, meter readings, dynamic tariffs), brought up to date at most once per ``refresh_s`` when a
request needs it. A reorganisation that undoes delivered blocks rebuilds every view from
the start, so the index never disagrees with the canonical chain for longer than a refresh.
Bands and readings are kept for ``window_minutes`` (default one day) back from the head.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from contracts import clock
from contracts.community import Community
from contracts.ledger import Reading
from contracts.limits import LimitedFlexibility
from contracts.orderbook import OrderBookView
from contracts.settlement import BandViolation, MemberSettlement, settlement_records

log = logging.getLogger(__name__)

DEFAULT_WINDOW_MINUTES = 24 * 60
FIRST_BLOCKS_BACK = 50_000  # a new index reads bands and readings from at most this far back


@dataclass
class Views:
    """The projections themselves (replaced whole on a rebuild)."""

    book: OrderBookView = field(default_factory=OrderBookView)
    # flexibility → minute → (P_min, P_max) kW as last published by the OCM oracle
    bands: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    limitations: list[LimitedFlexibility] = field(default_factory=list)
    statements: list[MemberSettlement] = field(default_factory=list)
    violations: list[BandViolation] = field(default_factory=list)
    readings: dict[str, deque[Reading]] = field(default_factory=dict)
    readings_per_minute: dict[int, int] = field(default_factory=dict)
    # (bus, Unix hour) → tokens per kWh as last posted by the DSO
    tariffs: dict[tuple[int, int], Decimal] = field(default_factory=dict)


class ChainIndex:
    """Event projections of one community, refreshed on demand (thread-safe)."""

    def __init__(
        self, community: Community, refresh_s: float = 1.0, window_minutes: int = DEFAULT_WINDOW_MINUTES
    ):
        self.community = community
        self.refresh_s = refresh_s
        self.window_minutes = window_minutes
        self._lock = threading.Lock()
        self._refreshed_at = -1e9
        self.head = -1
        self._start_followers()

    def _start_followers(self) -> None:
        c = self.community
        head = c.client.head_block()
        recent = max(0, head - FIRST_BLOCKS_BACK)
        self.views = Views()
        self._market = c.market.follow_events(0)
        self._settlement = c.settlement.follow_settlements(0)
        self._limitations = c.limits.follow_limitations(0)
        self._bands = c.limits.follow_bands(recent)
        self._readings = c.ledger.follow_readings(recent)
        self._tariffs = c.tariff.follow_tariffs(0)

    def _followers(self) -> tuple:
        return (self._market, self._settlement, self._limitations, self._bands, self._readings, self._tariffs)

    def refresh(self, force: bool = False) -> Views:
        """The views, brought up to the chain's head unless refreshed within ``refresh_s``."""
        with self._lock:
            now = time.monotonic()
            if force or now - self._refreshed_at >= self.refresh_s:
                self._catch_up()
                self._refreshed_at = time.monotonic()
            return self.views

    def _catch_up(self) -> None:
        head = self.community.client.head_block()
        updates = [follower.poll(head) for follower in self._followers()]
        if any(update.rewound_from is not None for update in updates):
            log.info("chain reorganised: rebuilding the API's views from the chain")
            self._start_followers()
            updates = [follower.poll(head) for follower in self._followers()]
        market, settlement, limitations, bands, readings, tariffs = updates
        views = self.views
        views.book.apply_all(market.items)
        statements, violations = settlement_records(settlement.items)
        views.statements.extend(statements)
        views.violations.extend(violations)
        views.limitations.extend(limitations.items)
        oldest = clock.minute_of(self.community.client.latest_timestamp()) - self.window_minutes
        for published in bands.items:
            band = published.band
            minutes = views.bands.setdefault(band.flex_id, {})
            for minute in range(clock.minute_of(band.start), clock.minute_of(band.end)):
                minutes[minute] = (band.p_min_kw, band.p_max_kw)
        for minutes in views.bands.values():
            for minute in [m for m in minutes if m < oldest]:
                del minutes[minute]
        for recorded in readings.items:
            reading = recorded.reading
            views.readings.setdefault(reading.meter_id, deque(maxlen=self.window_minutes)).append(reading)
            views.readings_per_minute[reading.minute] = views.readings_per_minute.get(reading.minute, 0) + 1
        for minute in [m for m in views.readings_per_minute if m < oldest]:
            del views.readings_per_minute[minute]
        for tariff in tariffs.items:
            views.tariffs[(tariff.bus, tariff.hour)] = tariff.price
        self.head = head
