"""A web3 provider that talks to an embedded node in process (no HTTP), so web3 tooling
and the chain client work against it exactly as against a remote node."""

from __future__ import annotations

import itertools
import json
from typing import Any

from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from node.chain.rpc import JsonRpc


class EmbeddedProvider(JSONBaseProvider):
    def __init__(self, rpc: JsonRpc):
        super().__init__()
        self._rpc = rpc
        self._ids = itertools.count(1)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params or [])}
        body = json.dumps(request, default=_json_default)
        return json.loads(self._rpc.handle(body))

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if hasattr(value, "hex"):
        return value.hex() if str(value.hex()).startswith("0x") else "0x" + value.hex()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
