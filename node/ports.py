"""Picking free ports for servers this process is about to start (ours or child processes).

A port is drawn at random below the kernel's ephemeral range, so that no outgoing
connection on the machine takes it as its local port before the server binds it, and is
never handed out twice by this process. It is checked free for TCP and UDP on all
interfaces and for TCP on the given host. Between the pick and the bind another program
may still take it: whoever starts the server must be ready to pick again.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOWEST, HIGHEST = 20_000, 32_000  # below Linux's default ephemeral range (32768..60999)

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing uses now (see the module doc)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that nothing uses now (see the module doc)."""
    low, high = LOWEST, min(_ephemeral_low() - 1, HIGHEST)
    if high - low < 100 * count:  # an unusual ephemeral range: take the kernel's choice
        return _kernel_choice(count, host)
    chosen: list[int] = []
    with _lock:
        for _ in range(100 * count):
            if len(chosen) == count:
                break
            port = random.randint(low, high)
            if port not in _handed_out and port not in chosen and _is_free(port, host):
                chosen.append(port)
        if len(chosen) < count:
            raise OSError(f"found only {len(chosen)} of {count} free ports in {low}..{high}")
        _handed_out.update(chosen)
    return chosen


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _is_free(port: int, host: str) -> bool:
    probes = ((socket.SOCK_STREAM, "0.0.0.0"), (socket.SOCK_DGRAM, "0.0.0.0"), (socket.SOCK_STREAM, host))
    for kind, address in probes:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def _kernel_choice(count: int, host: str) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()
