"""JSON-RPC over WebSocket for the embedded node, with geth's ``eth_subscribe``.

Every text (or binary) message is a JSON-RPC request or batch, answered by the same
``JsonRpc.handle`` as HTTP, so every method works here too. Only here:

- ``eth_subscribe ["newHeads"]``: each new canonical head, formatted as
  ``eth_getBlockByNumber`` formats it, without ``transactions`` and ``uncles``;
- ``eth_subscribe ["logs", {address?, topics?}]``: each matching log of each new canonical
  block, one notification per log, formatted as ``eth_getLogs`` formats it (the criteria
  are checked by the same code as ``eth_getLogs``). When blocks leave the canonical chain
  (a reorganisation), their matching logs are sent again with ``"removed": true`` (geth's
  convention), oldest dropped block first, before the logs of the new blocks (the node
  tells listeners only of new heads, so the dropped blocks are found by walking back from
  the previous head to the common ancestor). ``fromBlock``, ``toBlock`` and ``blockHash``
  are refused: past logs are ``eth_getLogs``' business;
- ``eth_subscribe ["newPendingTransactions"]``: the hash of each transaction newly admitted
  to the pool; with ``true`` as second parameter, the whole transaction as
  ``eth_getTransactionByHash`` formats it (transactions that return to the pool from a
  dropped branch are not announced again);
- ``eth_unsubscribe [id]``: true, or false for an unknown id.

Other kinds (geth's ``syncing``) are refused with -32602; a connection holds at most
``MAX_SUBSCRIPTIONS``.

A subscription id is 16 random bytes in hex, as geth makes them. Notifications are
``{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":ID,"result":...}}``;
the answer to ``eth_subscribe`` always comes before the subscription's first notification.
Subscriptions end with their connection.

The node calls its listeners with its lock held, so the listeners here only put the event
on a queue. One dispatcher thread formats each event once (taking the node's lock per
block) and puts the notifications on the outbox of each subscribed connection; each
connection has its own writer thread that sends its outbox (answers and notifications, in
order). An outbox holds at most ``max_queued`` messages: a client that does not read
them is disconnected with a warning in the log (geth drops slow subscribers too), so a
slow or dead client never holds up block production or the other clients.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import socket
import sys
import threading
import time
from collections import ChainMap, deque
from dataclasses import dataclass
from typing import Any

from eth.abc import BlockAPI, BlockHeaderAPI, SignedTransactionAPI
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from node.chain.rpc import JsonRpc, RpcError, data, invalid_params
from node.chain.server import MAX_BODY_BYTES

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 10_000  # per connection; more unsent and the client is dropped
MAX_SUBSCRIPTIONS = 1_000  # per connection
CLOSE_TIMEOUT_S = 2.0  # for the closing handshake
STOP_GRACE_S = 2.0  # stop() lets connections close cleanly this long, then cuts them
SUBSCRIPTION_KINDS = ("newHeads", "logs", "newPendingTransactions")
GOING_AWAY = 1001


@dataclass(frozen=True)
class Subscription:
    id: str
    kind: str
    criteria: dict | None = None  # logs
    full: bool = False  # newPendingTransactions: whole transactions, not hashes


def _subscription_id() -> str:
    """16 random bytes as a hex quantity (leading zeros dropped), as geth makes them."""
    return hex(int.from_bytes(secrets.token_bytes(16), "big"))


class _Connection:
    """One client: its subscriptions and its outbox, sent by its own writer thread."""

    def __init__(self, server: RpcWebSocketServer, websocket: ServerConnection):
        self.websocket = websocket
        try:
            host, port = websocket.remote_address[:2]
            self.peer = f"{host}:{port}"
        except OSError:  # it left right after the handshake
            self.peer = "(gone)"
        self._server = server
        self._rpc = server.rpc
        self._changed = threading.Condition()  # guards everything below
        self._outbox: deque[str] = deque()
        self._subscriptions: dict[str, Subscription] = {}
        self._pending: dict[str, Subscription] = {}  # made by the request being answered
        self._closing: tuple[int, str] | None = None
        self._ended = False
        self.finished = threading.Event()
        self.methods = ChainMap(
            {"eth_subscribe": self._subscribe, "eth_unsubscribe": self._unsubscribe}, self._rpc.methods
        )
        self._writer = threading.Thread(target=self._write, name=f"ws-send-{self.peer}", daemon=True)

    # ------------------------------------------------------------- reading side

    def serve(self) -> None:
        """Answer the client's requests until it goes (runs in websockets' thread)."""
        self._writer.start()
        try:
            for message in self.websocket:
                response = self._rpc.handle(message, self.methods)
                # b"null": handle's answer to a lone notification; JSON-RPC wants no answer
                if response not in (None, b"null") and not self.send(response.decode()):
                    break
                with self._changed:  # notifications only after the answer to eth_subscribe
                    self._subscriptions.update(self._pending)
                    self._pending.clear()
        except ConnectionClosed:
            pass  # the client went away, or sent a message over the size limit
        finally:
            self._end()
            self._writer.join(timeout=CLOSE_TIMEOUT_S + 1)
            self.finished.set()

    def _subscribe(self, params: Any) -> str:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise invalid_params(
                "eth_subscribe takes a subscription type (newHeads, logs or newPendingTransactions) "
                "and its options"
            )
        kind, options = params[0], params[1:]
        subscription_id = _subscription_id()
        if kind == "newHeads":
            if options:
                raise invalid_params("a newHeads subscription takes no options")
            subscription = Subscription(subscription_id, kind)
        elif kind == "logs":
            if len(options) > 1:
                raise invalid_params("a logs subscription takes one filter object {address, topics}")
            criteria = self._rpc._log_criteria(options[0] if options and options[0] is not None else {})
            if criteria["blockHash"] is not None or any(
                criteria[bound] not in (None, "latest", "pending") for bound in ("fromBlock", "toBlock")
            ):
                raise invalid_params(
                    "a logs subscription follows new blocks: fromBlock, toBlock and blockHash are not "
                    "supported (use eth_getLogs for past blocks)"
                )
            subscription = Subscription(subscription_id, kind, criteria=criteria)
        elif kind == "newPendingTransactions":
            if len(options) > 1 or (options and not isinstance(options[0], (bool, type(None)))):
                raise invalid_params(
                    "a newPendingTransactions subscription takes one optional boolean "
                    "(true: whole transactions, not hashes)"
                )
            subscription = Subscription(subscription_id, kind, full=bool(options and options[0]))
        else:
            raise invalid_params(
                f"unknown subscription type {kind[:40]!r}: use one of {', '.join(SUBSCRIPTION_KINDS)}"
            )
        with self._changed:
            if self._ended:
                raise RpcError(-32000, "the connection is closing")
            if len(self._subscriptions) + len(self._pending) >= MAX_SUBSCRIPTIONS:
                raise RpcError(-32000, f"too many subscriptions: at most {MAX_SUBSCRIPTIONS} per connection")
            self._pending[subscription_id] = subscription
        return subscription_id

    def _unsubscribe(self, params: Any) -> bool:
        if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], str):
            raise invalid_params("eth_unsubscribe takes one subscription id")
        with self._changed:
            found = self._subscriptions.pop(params[0], None) or self._pending.pop(params[0], None)
        return found is not None

    def subscriptions(self) -> list[Subscription]:
        with self._changed:
            return list(self._subscriptions.values())

    # ------------------------------------------------------------- sending side

    def send(self, message: str, subscription_id: str | None = None) -> bool:
        """Queue ``message`` for the writer (a notification only while its subscription is
        active, so none follows the answer to eth_unsubscribe); False if the connection has
        ended, or if the outbox is full (and the client is dropped)."""
        with self._changed:
            if self._ended:
                return False
            if subscription_id is not None and subscription_id not in self._subscriptions:
                return True
            if len(self._outbox) < self._server.max_queued:
                self._outbox.append(message)
                self._changed.notify()
                return True
        log.warning(
            "WebSocket client %s dropped: more than %d messages waiting (it does not read them)",
            self.peer,
            self._server.max_queued,
        )
        self.abort()
        return False

    def notify(self, subscription_id: str, result_json: str) -> bool:
        prefix = '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
        return self.send(f'{prefix}{subscription_id}","result":{result_json}}}}}', subscription_id)

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close the connection (from the writer thread)."""
        with self._changed:
            self._closing = (code, reason)
            self._changed.notify()

    def abort(self) -> None:
        """Cut the connection at once, without waiting for anything (never blocks)."""
        self._end()
        with contextlib.suppress(OSError):  # already closed
            self.websocket.socket.shutdown(socket.SHUT_RDWR)

    def _end(self) -> None:
        with self._changed:
            self._ended = True
            self._outbox.clear()
            self._subscriptions.clear()
            self._pending.clear()
            self._changed.notify()

    def _write(self) -> None:
        while True:
            with self._changed:
                while not self._outbox and not self._ended and self._closing is None:
                    self._changed.wait()
                if self._ended:
                    return
                if not self._outbox:
                    code, reason = self._closing
                    break
                message = self._outbox.popleft()
            try:
                self.websocket.send(message)
            except (ConnectionClosed, OSError):
                self._end()
                return
        with contextlib.suppress(ConnectionClosed, OSError):
            self.websocket.close(code, reason)


class _QuietLog(logging.LoggerAdapter):
    """websockets' log without its frame-by-frame debug lines, and with a failed opening
    handshake (a port scan, a plain HTTP request, a client that hangs up at once) as one
    debug line instead of an error with a traceback."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and super().isEnabledFor(level)

    def log(self, level, msg, *args, **kwargs):
        if msg == "opening handshake failed":
            log.debug("WebSocket opening handshake failed: %r", sys.exc_info()[1])
        elif level <= logging.INFO:  # "connection open", ... for every client
            log.debug("websockets: " + msg, *args)
        else:
            super().log(level, msg, *args, **kwargs)


class RpcWebSocketServer:
    """JSON-RPC and subscriptions on ``ws://host:port`` (binds when created)."""

    def __init__(
        self,
        rpc: JsonRpc,
        host: str = "127.0.0.1",
        port: int = 8546,
        max_queued: int = MAX_QUEUED_MESSAGES,
    ):
        self.rpc = rpc
        self.max_queued = max_queued
        self._server = serve(
            self._serve_connection,
            host,
            port,
            max_size=MAX_BODY_BYTES,
            close_timeout=CLOSE_TIMEOUT_S,
            server_header="lec-node",
            logger=_QuietLog(logging.getLogger("websockets.server"), {}),
        )
        self._connections: set[_Connection] = set()
        self._connections_lock = threading.Lock()
        self._events: queue.Queue = queue.Queue()
        self._running = False
        self._last_head: BlockHeaderAPI | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}"

    @property
    def connection_count(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def start(self) -> RpcWebSocketServer:
        node = self.rpc.node
        self._running = True
        with node.lock:  # no block can slip between the head we start from and the listener
            self._last_head = node.chain.get_canonical_head()
            node.on_block(self._on_block)
            node.on_transaction(self._on_transaction)
        for target, name in ((self._server.serve_forever, "rpc-ws"), (self._dispatch, "rpc-ws-dispatch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("JSON-RPC over WebSocket listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop listening and end every connection (cleanly if the client answers within
        ``STOP_GRACE_S``, else cut)."""
        self._running = False
        self._server.shutdown()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close(GOING_AWAY, "server stopping")
        deadline = time.monotonic() + STOP_GRACE_S
        for connection in connections:
            if not connection.finished.wait(max(0.0, deadline - time.monotonic())):
                connection.abort()
        for connection in connections:
            connection.finished.wait(timeout=CLOSE_TIMEOUT_S + 2)
        self._events.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # -------------------------------------------------------------- connections

    def _serve_connection(self, websocket: ServerConnection) -> None:
        connection = _Connection(self, websocket)
        with self._connections_lock:
            accepted = self._running  # stop() sees every connection added before it began
            if accepted:
                self._connections.add(connection)
        if not accepted:
            websocket.close(GOING_AWAY, "server stopping")
            return
        log.debug("WebSocket client %s connected", connection.peer)
        try:
            connection.serve()
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            log.debug("WebSocket client %s disconnected", connection.peer)

    def _subscribed(self) -> list[tuple[_Connection, Subscription]]:
        with self._connections_lock:
            connections = list(self._connections)
        return [(c, s) for c in connections for s in c.subscriptions()]

    # ------------------------------------------------------------ notifications

    def _on_block(self, block: BlockAPI) -> None:
        if self._running:  # called with the node's lock held: only queue it
            self._events.put(("block", block))

    def _on_transaction(self, transaction: SignedTransactionAPI) -> None:
        if self._running:
            self._events.put(("transaction", transaction))

    def _dispatch(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            kind, item = event
            try:
                if kind == "block":
                    self._publish_block(item)
                else:
                    self._publish_transaction(item)
            except Exception:
                if not self._running:
                    return
                log.exception("could not notify the subscribers of a %s", kind)

    def _publish_block(self, block: BlockAPI) -> None:
        subscribed = self._subscribed()
        heads = [(c, s) for c, s in subscribed if s.kind == "newHeads"]
        logs = [(c, s) for c, s in subscribed if s.kind == "logs"]
        previous, self._last_head = self._last_head, block.header
        rpc = self.rpc
        with rpc.node.lock:
            dropped = self._dropped_blocks(previous, block.header) if logs else []
            head_json = None
            if heads:
                header = rpc._format_block(block, False)
                del header["transactions"], header["uncles"]
                head_json = json.dumps(header, separators=(",", ":"))
            removed_entries = [
                {**entry, "removed": True}
                for old in dropped
                for receipt in rpc._receipts(old)
                for entry in receipt["logs"]
            ]
            entries = [entry for receipt in rpc._receipts(block) for entry in receipt["logs"]] if logs else []
        for connection, subscription in heads:
            connection.notify(subscription.id, head_json)
        for connection, subscription in logs:
            for entry in (*removed_entries, *entries):
                if rpc._matches(entry, subscription.criteria):
                    connection.notify(subscription.id, json.dumps(entry, separators=(",", ":")))

    def _dropped_blocks(self, previous: BlockHeaderAPI, new: BlockHeaderAPI) -> list[BlockAPI]:
        """The blocks that left the canonical chain when ``new`` became the head after
        ``previous``, oldest first (none unless it was a reorganisation)."""
        if new.parent_hash == previous.hash or new.hash == previous.hash:
            return []
        chain = self.rpc.chain
        old, fork = previous, chain.get_block_header_by_hash(new.parent_hash)
        dropped = []
        while old.block_number > fork.block_number:
            dropped.append(old)
            old = chain.get_block_header_by_hash(old.parent_hash)
        while fork.block_number > old.block_number:
            fork = chain.get_block_header_by_hash(fork.parent_hash)
        while old.hash != fork.hash:
            dropped.append(old)
            old = chain.get_block_header_by_hash(old.parent_hash)
            fork = chain.get_block_header_by_hash(fork.parent_hash)
        return [self.rpc._block(header) for header in reversed(dropped)]

    def _publish_transaction(self, transaction: SignedTransactionAPI) -> None:
        subscribed = [(c, s) for c, s in self._subscribed() if s.kind == "newPendingTransactions"]
        if not subscribed:
            return
        hash_json = json.dumps(data(transaction.hash))
        full_json = None
        if any(s.full for _, s in subscribed):
            formatted = self.rpc._format_transaction(transaction, None, None)
            full_json = json.dumps(formatted, separators=(",", ":"))
        for connection, subscription in subscribed:
            connection.notify(subscription.id, full_json if subscription.full else hash_json)
