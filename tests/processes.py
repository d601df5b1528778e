"""Ending the product's processes that tests start: gently (Ctrl-C) or with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess


def kill_hard(process: subprocess.Popen) -> None:
    """kill -9, and reap it."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def interrupt(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """Ctrl-C a running process and wait for it; kill -9 it if it does not end in ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_hard(process)
