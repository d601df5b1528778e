"""An embedded node served over HTTP on a free port, shared by a module's tests."""

from __future__ import annotations

import json
import urllib.request

import pytest

from node.embedded import open_embedded_chain


@pytest.fixture(scope="module")
def served():
    chain = open_embedded_chain(None, period=1)
    url = chain.serve("127.0.0.1", 0)
    yield chain, url
    chain.stop()


def post(url: str, payload) -> object:
    """POST a raw JSON-RPC payload (bytes or JSON-able) and decode the answer."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def rpc(url: str, method: str, *params):
    return post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
