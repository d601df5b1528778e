"""What a client may send: a token bucket per client address (over it, 429 with
``Retry-After``, before a request costs the chain anything), and a bounded request body
whose JSON nesting is checked before anything parses it."""

from __future__ import annotations

import re
import threading
import time

MAX_CLIENTS = 50_000


class RateLimiter:
    """``allow(client)``: (allowed, seconds until the next request would be)."""

    def __init__(self, per_second: float, burst: int, clock=time.monotonic):
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> tuple[bool, float]:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return False, (1.0 - tokens) / self.per_second
            if len(self._buckets) >= MAX_CLIENTS and client not in self._buckets:
                self._buckets.clear()  # a flood of addresses: start over rather than grow
            self._buckets[client] = (tokens - 1.0, now)
            return True, 0.0


MAX_BODY_BYTES = 512 * 1024  # the largest request is a relayed transaction (at most 256 KiB of hex)
MAX_JSON_DEPTH = 32  # no request of this API nests deeper
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects of ``body`` nest deeper than ``limit`` (strings
    skipped). Checked before parsing: with the recursion limit py_ecc sets, ``json.loads``
    of 100,000 ``[`` crashes the process instead of raising (the node's JSON-RPC server
    guards its requests the same way)."""
    if body.count(b"[") + body.count(b"{") <= limit:  # every ordinary request
        return False
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


class BodyGuard:
    """ASGI middleware: a request body is read whole, at most ``max_bytes`` (else 413), and
    refused when its JSON nests deeper than ``max_depth`` (else 400), before any route
    parses it."""

    def __init__(self, app, refuse, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH):
        self.app = app
        self.refuse = refuse  # (status, title, detail, scope) -> an ASGI response
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.refuse(413, "Request too large", self._too_large(), scope)(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self.refuse(413, "Request too large", self._too_large(), scope)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if nests_deeper_than(body, self.max_depth):
            detail = f"body: JSON nested deeper than {self.max_depth} levels"
            await self.refuse(400, "Invalid request", detail, scope)(scope, receive, send)
            return
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"body: at most {self.max_bytes} bytes"
