"""The gateway service: MQTT in, validation, durable queue, chain out.

Meters publish on ``lec/<community>/meter/<meter_id>/reading`` (QoS 1). The gateway
subscribes with a persistent session (fixed client id, clean session off) and manual
acknowledgements: a message is acknowledged only after its reading is committed to the
queue (or it was refused), so a crash before the commit makes the broker deliver it
again. Refusals are published on ``lec/<community>/meter/<meter_id>/rejected``.

Flow control: the broker sends a client only so many unacknowledged messages (Mosquitto's
``max_inflight_messages``), and the gateway stops taking messages while its queue holds
``max_backlog`` readings, so an overload waits in the broker's persistent session instead
of in the gateway's memory. Several gateways share the load through an MQTT shared
subscription (``$share/<group>/…``, Mosquitto): each message goes to one of them, each
records with its own key, and the ledger's one-reading-per-(meter, minute) rule makes a
redelivery to another gateway harmless.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from contracts import clock
from contracts.client import Signer
from contracts.community import Community
from gateway.meter_keys import MeterDirectory
from gateway.payload import Reason, Rejection
from gateway.queue import AcceptOutcome, QueuedReading, ReadingQueue
from gateway.ratelimit import ThrottledLog
from gateway.submitter import Submitter, SubmitterSettings
from gateway.validation import AcceptancePolicy, ReadingValidator

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_COMMIT = 500
INBOX_LIMIT = 2 * MAX_MESSAGES_PER_COMMIT  # received, not yet committed: the MQTT thread waits beyond
DEFAULT_MAX_BACKLOG = 20_000  # queued readings at which the gateway stops taking messages
MAINTENANCE_INTERVAL_S = 1.0
STATS_LOG_INTERVAL_S = 60.0


def reading_topic(community: str, meter_id: str = "+") -> str:
    return f"lec/{community}/meter/{meter_id}/reading"


def subscription(community: str, share_group: str | None = None) -> str:
    """The gateway's topic filter: every meter's readings, shared by ``share_group``'s members."""
    topic = reading_topic(community)
    return f"$share/{share_group}/{topic}" if share_group else topic


def rejected_topic(community: str, meter_id: str) -> str:
    return f"lec/{community}/meter/{meter_id}/rejected"


def topic_name(community_name: str) -> str:
    """The ``<community>`` topic level for a community name: ``"Demo energy community"``
    → ``"demo-energy-community"``."""
    return re.sub(r"[^a-z0-9_]+", "-", community_name.lower()).strip("-") or "community"


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is and how the gateway logs in (from ``mqtt[s]://user:pass@host:port``)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> MqttSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(
                f"MQTT URL must look like mqtt://user:password@host:port, got {parts.scheme}://…"
            )
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


class GatewayService:
    """Runs the MQTT client, the acceptance worker, the submitter and the directory sync."""

    def __init__(
        self,
        community: Community,
        signer: Signer,
        queue_path: Path,
        mqtt_settings: MqttSettings,
        topic_community: str,
        policy: AcceptancePolicy | None = None,
        submitter_settings: SubmitterSettings | None = None,
        name: str = "gateway",
        share_group: str | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
    ):
        """``name`` tells gateways apart (MQTT client id); with ``share_group`` the gateway
        subscribes through that shared subscription (several gateways, one broker)."""
        if share_group is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", share_group):
            raise ValueError(f"share group must be letters, digits, '-' or '_', got {share_group!r}")
        self.community = community
        self.topic_community = topic_community
        self.name = name
        self.share_group = share_group
        self.max_backlog = max_backlog
        self.mqtt_settings = mqtt_settings
        self.directory = MeterDirectory(community)
        self.validator = ReadingValidator(self.directory, policy or AcceptancePolicy(), clock.now)
        self.queue = ReadingQueue(queue_path)
        settings = submitter_settings or SubmitterSettings()
        self.submitter = Submitter(community, signer, self.queue, settings, self._dead_lettered)
        self.counters: Counter[str] = Counter()
        self.connected = threading.Event()
        self._inbox: queue.Queue[tuple[mqtt.MQTTMessage, float]] = queue.Queue(INBOX_LIMIT)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rejections = ThrottledLog(log, logging.WARNING)
        self._backlog_full = ThrottledLog(log, logging.WARNING)
        self._final_counts: dict[str, int] | None = None
        self._client = self._mqtt_client()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> GatewayService:
        try:
            self.directory.sync()
        except Exception as error:  # the chain may come later; the maintenance loop retries
            log.warning("cannot read the meter registry yet: %s", error)
        self._client.connect_async(self.mqtt_settings.host, self.mqtt_settings.port, keepalive=30)
        self._client.loop_start()
        for target, name in ((self._accept_loop, "accept"), (self._maintenance_loop, "maintenance")):
            thread = threading.Thread(target=target, name=f"gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.submitter.start()
        log.info(
            "%s for %r: %d meters, subscribed to %s on %s, queue %s",
            self.name,
            self.topic_community,
            len(self.directory),
            subscription(self.topic_community, self.share_group),
            self.mqtt_settings,
            self.queue.counts(),
        )
        return self

    def stop(self) -> None:
        """Stop taking messages, finish the current commit, stop submitting, close the queue."""
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.submitter.stop()
        self._final_counts = self.queue.counts()
        self.queue.close()

    def stats(self) -> dict[str, int]:
        """Counters (accepted, redelivered, rejected.<reason>, delivered) and queue sizes
        (as the queue was closed, once stopped)."""
        counts = self._final_counts if self._final_counts is not None else self.queue.counts()
        return {**self.counters, "delivered": self.submitter.delivered, **counts}

    # ----------------------------------------------------------------------- MQTT

    @property
    def client_id(self) -> str:
        """``lec-gateway-<community>`` for the gateway called "gateway", else with its name."""
        suffix = "" if self.name == "gateway" else f"-{self.name}"
        return f"lec-gateway-{self.topic_community}{suffix}"

    def _mqtt_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        settings = self.mqtt_settings
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s refused the gateway: %s", self.mqtt_settings, reason_code)
            return
        client.subscribe(subscription(self.topic_community, self.share_group), qos=1)
        self.connected.set()
        log.info("connected to %s (session present: %s)", self.mqtt_settings, flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """Hand the message to the acceptance worker; when it is INBOX_LIMIT behind, wait
        (the broker then holds the rest: flow control)."""
        received_at = clock.now()
        while not self._stop.is_set():
            try:
                self._inbox.put((message, received_at), timeout=0.5)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------------ acceptance

    def _accept_loop(self) -> None:
        """Take messages in groups of at most MAX_MESSAGES_PER_COMMIT and never more than the
        queue has room for below ``max_backlog``; with no room, wait for the chain (the
        broker holds the rest: flow control)."""
        while not self._stop.is_set():
            room = min(MAX_MESSAGES_PER_COMMIT, self.max_backlog - self.queue.queued)
            if room <= 0:
                self._backlog_full.log("full", "queue holds %d readings: taking no more until it drains",
                                       self.queue.queued)  # fmt: skip
                self._stop.wait(0.2)
                continue
            try:
                batch = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < room:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._accept(batch)
            except Exception:  # the queue could not commit: leave unacknowledged, get them again
                log.exception("could not queue %d messages; reconnecting for redelivery", len(batch))
                self._client.reconnect()

    def _accept(self, batch: list[tuple[mqtt.MQTTMessage, float]]) -> None:
        """Validate, commit the accepted readings in one transaction, then acknowledge all."""
        valid, rejections = [], []
        for message, received_at in batch:
            meter_id = message.topic.split("/")[3] if message.topic.count("/") == 4 else None
            try:
                if meter_id is None:
                    raise Rejection(Reason.SCHEMA, f"unexpected topic {message.topic!r}")
                valid.append((meter_id, self.validator.validate(meter_id, message.payload), received_at))
            except Rejection as rejection:
                rejections.append((meter_id, rejection))
            except Exception as error:  # never let one payload stop the gateway
                log.exception("unexpected error on a payload of %s", meter_id)
                rejections.append((meter_id, Rejection(Reason.MALFORMED, f"cannot process: {error}")))
        outcomes = self.queue.accept([(signed, received_at) for _, signed, received_at in valid])
        for (meter_id, signed, _), outcome in zip(valid, outcomes, strict=True):
            if outcome is AcceptOutcome.CONFLICT:
                detail = "a different reading of this meter and minute was accepted before"
                duplicate = Rejection(Reason.DUPLICATE, detail, signed.reading.time, signed.seq)
                rejections.append((meter_id, duplicate))
            else:
                self.counters["accepted" if outcome is AcceptOutcome.NEW else "redelivered"] += 1
        for meter_id, rejection in rejections:
            self._reject(meter_id, rejection)
        for message, _ in batch:
            self._client.ack(message.mid, message.qos)

    def _reject(self, meter_id: str | None, rejection: Rejection) -> None:
        self.counters[f"rejected.{rejection.reason}"] += 1
        reason = str(rejection.reason)
        self._rejections.log(reason, "refused a reading of %s: %s (%s)", meter_id, reason, rejection.detail)
        if meter_id:
            topic = rejected_topic(self.topic_community, meter_id)
            self._client.publish(topic, json.dumps(rejection.message()), qos=1)

    def _dead_lettered(self, items: list[QueuedReading], detail: str) -> None:
        for item in items:
            rejection = Rejection(Reason.CHAIN_REFUSED, detail, item.reading.time, item.seq)
            self._reject(item.reading.meter_id, rejection)

    # ----------------------------------------------------------------- maintenance

    def _maintenance_loop(self) -> None:
        """Follow the registry, forget delivered readings outside the window, report."""
        last_report = time.monotonic()
        while not self._stop.wait(MAINTENANCE_INTERVAL_S):
            try:
                self.directory.sync()
                self.queue.prune_delivered(int(clock.now()) - self.validator.policy.max_age_s)
            except Exception as error:
                log.debug("maintenance skipped: %s", error)
            if time.monotonic() - last_report >= STATS_LOG_INTERVAL_S:
                last_report = time.monotonic()
                log.info("gateway: %s", self.stats())
