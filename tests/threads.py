"""Running chain-heavy test bodies on a fresh thread."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_fresh_thread(run: Callable[[], None]) -> None:
    """Run ``run`` on a new thread and re-raise what it raised.

    CPython 3.11 keeps frames in 16 KiB stack chunks and frees a chunk as soon as the
    stack shrinks below it; at pytest's call depth py-evm's interpreter loop can sit on a
    chunk boundary, and then every call maps and unmaps a chunk (millions of mmap/munmap
    pairs, 3-10x slower). A fresh thread starts at a different depth."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as error:  # re-raised in the caller's thread
            raised.append(error)

    thread = threading.Thread(target=target, name="chain-test")
    thread.start()
    thread.join()
    if raised:
        raise raised[0]
