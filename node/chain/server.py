"""JSON-RPC over HTTP for the embedded node (POST a JSON-RPC request to ``/``)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from node.chain.rpc import JsonRpc

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
IDLE_CONNECTION_TIMEOUT_S = 300


class _TrackingHTTPServer(ThreadingHTTPServer):
    """Remembers its open connections so that stopping the server also ends the
    kept-alive ones (HTTP/1.1 clients would otherwise keep being answered)."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog (socketserver's default of 5 refuses bursts)

    def __init__(self, *args, **kwargs):
        self.open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


class RpcHttpServer:
    """A threaded HTTP server answering JSON-RPC on ``http://host:port/``."""

    def __init__(self, rpc: JsonRpc, host: str = "127.0.0.1", port: int = 8545):
        handler = _handler_for(rpc)
        self._server = _TrackingHTTPServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RpcHttpServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpc-http", daemon=True)
        self._thread.start()
        log.info("JSON-RPC listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop listening and end every open connection, kept-alive ones included."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _handler_for(rpc: JsonRpc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave in two writes: no 40 ms stall
        server_version = "lec-node"
        timeout = IDLE_CONNECTION_TIMEOUT_S  # an idle kept-alive connection is closed after this

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self._reply(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b'{"error":"request body missing or too large"}'
                )
                return
            body = self.rfile.read(length)
            response = rpc.handle(body)
            self._reply(HTTPStatus.OK, response or b"")

        def do_GET(self) -> None:
            self._reply(
                HTTPStatus.OK, b'{"service":"lec-node JSON-RPC","usage":"POST JSON-RPC 2.0 requests to /"}'
            )

        def do_OPTIONS(self) -> None:
            self._reply(HTTPStatus.NO_CONTENT, b"")

        def _reply(self, status: HTTPStatus, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
            self.send_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
