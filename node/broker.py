"""The embedded MQTT broker (amqtt) for single-machine set-ups, run in its own thread.

It accepts every client on the given address (no passwords, no ACL) and keeps the
persistent sessions of clients that give a user name (the gateway does) in memory, so
readings published while the gateway is away wait for it. Good for one machine and test
benches, not for meters on a network: use Mosquitto with a password file and an ACL
there (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import OUTGOING

from node.ports import free_port

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60  # generous: the broker starts in well under a second
PORT_ATTEMPTS = 5


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
        log.info("embedded MQTT broker stopped")

    async def _start_broker(self) -> None:
        from amqtt.broker import Broker

        _keep_unacknowledged_messages()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {f"{__name__}.OpenAuthPlugin": {}},
        }
        self._broker = Broker(config)
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
