"""Brokers for the tests: the embedded amqtt broker and the production Mosquitto
(``node.mosquitto``: a password per meter, the ACL of docs/gateway.md), each behind a
relay so that it can be restarted without its clients changing address."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest

from node import mosquitto
from node.broker import EmbeddedBroker

GATEWAY_USER = "gateway"


class Relay:
    """A TCP relay from a port of its own to a server that may move to another port.

    A server restarted on its old port needs that port free again at once, and on a busy
    machine something else may have taken it; restarted on a new port, its clients would
    need the new address. The relay keeps one listening socket for its whole life (the
    clients' address, ``port``) and forwards each connection to the server's current
    port; while the server is down or ``pause`` d, connections are closed at once, as a
    refused connection would be.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host = host
        self._target: tuple[str, int] | None = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._links: set[tuple[socket.socket, socket.socket]] = set()
        self._generation = 0  # counts retargets and pauses: a link made across one is cut too
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._acceptor.start()

    def retarget(self, port: int) -> None:
        """Forward new connections to ``port``; cut those to the old one."""
        with self._lock:
            self._target = (self.host, port)
            self._generation += 1
        self.cut()

    def pause(self) -> None:
        """Cut every connection and close new ones at once (an outage), until ``retarget``."""
        with self._lock:
            self._target = None
            self._generation += 1
        self.cut()

    def cut(self) -> None:
        """Close every relayed connection (both ends)."""
        with self._lock:
            links, self._links = self._links, set()
        for link in links:
            _close(*link)

    def close(self) -> None:
        self._closed.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                target, generation = self._target, self._generation
            try:
                if target is None:
                    raise ConnectionRefusedError
                server = socket.create_connection(target, timeout=10)
            except OSError:  # the server is down: let the client find out and retry
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                current = generation == self._generation
                if current:
                    self._links.add((client, server))
            if not current:  # retargeted or paused meanwhile
                _close(client, server)
                continue
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with self._lock:
            self._links.discard((source, sink))
            self._links.discard((sink, source))
        _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def mosquitto_available() -> bool:
    return mosquitto.MosquittoBroker.available()


def needs_mosquitto():
    return pytest.mark.skipif(
        not mosquitto_available(), reason="mosquitto is not installed (apt-get install mosquitto)"
    )


class AmqttBroker:
    """The embedded broker behind a relay; anyone may connect, the gateway logs in with a
    user name. ``restart`` starts a new broker (its sessions are gone, as after a real
    restart) on a new port."""

    kind = "amqtt"

    def __init__(self, tmp_path: Path | None = None):
        self._broker = EmbeddedBroker("127.0.0.1", 0).start()
        self._relay = Relay(self._broker.port)
        self.host, self.port = self._relay.host, self._relay.port

    @property
    def gateway_url(self) -> str:
        return f"mqtt://{GATEWAY_USER}@{self.host}:{self.port}"

    def meter_login(self, meter_id: str) -> tuple[str | None, str | None]:
        return None, None

    def restart(self) -> None:
        self._broker.stop()
        self._broker = EmbeddedBroker("127.0.0.1", 0).start()
        self._relay.retarget(self._broker.port)

    def close(self) -> None:
        self._relay.close()
        self._broker.stop()


class MosquittoBroker:
    """The production Mosquitto (``node.mosquitto``: password per meter, the gateway
    user, ACL, persistence) behind a relay. Each start listens on a new free port (the
    relay's stays); the persisted sessions and queued messages carry over."""

    kind = "mosquitto"

    def __init__(self, tmp_path: Path, meter_ids):
        self.broker = mosquitto.MosquittoBroker(tmp_path / "mosquitto", "127.0.0.1", 0, meter_ids)
        self.directory = self.broker.directory
        self._relay: Relay | None = None
        self.host, self.port = "127.0.0.1", 0
        self.start()

    @property
    def gateway_url(self) -> str:
        user, password = self.broker.gateway_login()
        return f"mqtt://{user}:{password}@{self.host}:{self.port}"

    def meter_login(self, meter_id: str) -> tuple[str | None, str | None]:
        return self.broker.meter_login(meter_id)

    def start(self) -> None:
        """Start Mosquitto on a free port and point the relay at it."""
        self.broker.start()
        if self._relay is None:
            self._relay = Relay(self.broker.port, self.host)
            self.port = self._relay.port
        else:
            self._relay.retarget(self.broker.port)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queued messages, then exits."""
        self.broker.stop()
        if self._relay is not None:
            self._relay.cut()

    def close(self) -> None:
        self.stop()
        if self._relay is not None:
            self._relay.close()

    def restart(self) -> None:
        self.stop()
        self.start()
