"""The embedded MQTT broker (amqtt) for single-machine set-ups, run in its own thread.

It accepts every client on the given address (no passwords, no ACL) and keeps the
persistent sessions of clients that give a user name (the gateway does) in memory, so
readings published while the gateway is away wait for it. Good for one machine and test
benches, not for meters on a network: ``lec up`` runs Mosquitto with a password per
meter and an ACL (``node.mosquitto``) and this broker only when Mosquitto is not installed
or ``--embedded-broker`` asks for it. amqtt's warnings that come once per message under
load ("Received PUBACK for unknown pending message") are summed up: the first of each
kind, then one line a minute with the count (``RepeatSummary``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import OUTGOING

from node.ports import free_port

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60  # generous: the broker starts in well under a second
PORT_ATTEMPTS = 5
REPEAT_WINDOW_S = 60.0  # amqtt's repeated warnings: one line per kind and minute


class EmbeddedBroker:
    """An amqtt broker on ``host:port``. Port 0 picks a free one (``node.ports``), and
    another if some other program takes it before the broker binds it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883):
        self.host = host
        self._pick_port = not port
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start serving; returns once the broker listens (raises if it cannot)."""
        for chatty in ("amqtt", "transitions"):  # they log every connection at INFO
            logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
        _summarize_repeats()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._serve()
                break
            except OSError as error:
                if not self._pick_port or attempt == PORT_ATTEMPTS or "in use" not in str(error):
                    raise
                log.info("port %d was taken (%s); picking another", self.port, error)
                self.port = free_port(self.host)
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    def _serve(self) -> None:
        """Run the broker in its own thread and event loop; return once it listens."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start_broker())
            except BaseException as error:
                failure.append(error)
                started.set()
                self._loop.close()
                return
            started.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="mqtt-broker", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S):
            raise RuntimeError(
                f"the embedded MQTT broker did not start on {self.host}:{self.port} in {START_TIMEOUT_S} s"
            )
        if failure:
            self._broker = None
            raise OSError(f"the embedded MQTT broker cannot listen on {self.host}:{self.port}: {failure[0]}")

    def stop(self) -> None:
        """Shut the broker down (its sessions and queued messages are dropped)."""
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=10)
        except Exception as error:  # a client mid-handshake can make amqtt's shutdown complain
            log.debug("embedded broker shutdown: %s", error)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._broker = None
        _REPEATS.flush()
        log.info("embedded MQTT broker stopped")

    async def _start_broker(self) -> None:
        from amqtt.broker import Broker

        _keep_unacknowledged_messages()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {f"{__name__}.OpenAuthPlugin": {}},
        }
        self._broker = Broker(config)
        _summarize_repeats()  # the loggers the broker made too
        await self._broker.start()


class OpenAuthPlugin(BaseAuthPlugin):
    """Lets every client in; one with a user name gets a session that survives disconnects
    (amqtt keeps no messages for anonymous sessions)."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session) -> bool:
        session.is_anonymous = not session.username
        return True


def _keep_unacknowledged_messages() -> None:
    """Make amqtt redeliver what a persistent subscriber never acknowledged.

    amqtt 0.12 forgets a QoS 1 message sent to a subscriber when the PUBACK does not come
    (connection lost, or 5 s passed), so a gateway killed between receiving and
    acknowledging would lose it. MQTT 3.1.1 (4.4) wants it resent when the session
    resumes; putting it back into the session's in-flight messages makes amqtt's own
    ``_retry_deliveries`` resend it (with DUP) on the next connect."""
    original = BrokerProtocolHandler._handle_qos1_message_flow
    if getattr(original, "keeps_unacknowledged", False):
        return

    async def flow(self, app_message) -> None:
        try:
            await original(self, app_message)
        except (asyncio.CancelledError, TimeoutError):
            session = self.session
            outgoing = app_message.direction == OUTGOING and app_message.puback_packet is None
            if outgoing and session is not None and not session.clean_session:
                session.inflight_out[app_message.packet_id] = app_message
            raise

    flow.keeps_unacknowledged = True
    BrokerProtocolHandler._handle_qos1_message_flow = flow


class RepeatSummary(logging.Filter):
    """Lets the first record of each kind through, then at most one per ``window_s`` that
    says how many were held back: ``… (N more in the last 60 s)``.

    A kind is the logger, the level and the message with its numbers and quoted parts
    blanked out, so "Received PUBACK for unknown pending message Id: '17'" and "…: '18'"
    are one kind (amqtt logs such a line per message under load). Counts held back when no
    further record comes are reported by ``flush``."""

    MAX_KINDS = 1000

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._kinds: dict[tuple, list] = {}  # kind -> [time let through, held back, last record]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):  # from flush: already counted
            return True
        kind = (record.name, record.levelno, _blank(record.getMessage()))
        now = self._clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is not None and now - state[0] < self.window_s:
                state[1] += 1
                state[2] = record
                return False
            if state is not None and state[1]:
                _append_count(record, state[1], now - state[0])
            if state is None and len(self._kinds) >= self.MAX_KINDS:
                self._kinds.pop(next(iter(self._kinds)))
            self._kinds[kind] = [now, 0, None]
            return True

    def flush(self) -> None:
        """Log the last record held back of each kind, with the count of the others."""
        now = self._clock()
        with self._lock:
            pending = [(state[1], now - state[0], state[2]) for state in self._kinds.values() if state[1]]
            self._kinds.clear()
        for held, span_s, record in pending:
            if held > 1:
                _append_count(record, held - 1, span_s)
            record.repeat_summary = True
            logging.getLogger(record.name).handle(record)


def _blank(message: str) -> str:
    return re.sub(r"'[^']*'|\d+", "#", message)


def _append_count(record: logging.LogRecord, count: int, span_s: float) -> None:
    record.msg = f"{record.getMessage()} ({count} more in the last {span_s:.0f} s)"
    record.args = ()


_REPEATS = RepeatSummary()
AMQTT_LOGGERS = ("amqtt", "amqtt.broker", "amqtt.mqtt.protocol.handler", "amqtt.session", "amqtt.adapters",
                 "amqtt.plugins.manager", "amqtt.contexts", "amqtt.utils", "amqtt.client")  # fmt: skip


def _summarize_repeats() -> None:
    """Put the ``RepeatSummary`` filter on amqtt's loggers: its modules' and whatever other
    amqtt logger exists (a filter sees only the records of the logger it is on, not those
    of its children, and amqtt makes some loggers only when a broker is made)."""
    existing = [name for name in logging.root.manager.loggerDict if name.startswith("amqtt.")]
    for name in {*AMQTT_LOGGERS, *existing}:
        logger = logging.getLogger(name)
        if _REPEATS not in logger.filters:
            logger.addFilter(_REPEATS)
