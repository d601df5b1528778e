"""Export the canonical chain in geth's block-file format.

geth's ``export``/``import`` files are the RLP encodings of whole blocks (header,
transactions, uncles), one after another, without a separator or a count; typed
transactions appear in their network form (an RLP string holding ``type || payload``).
The genesis is not in the file: an importer has it from ``genesis.json``
(``GenesisConfig.to_geth()`` for geth).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import rlp
from eth.abc import BlockAPI
from eth.chains.base import Chain
from eth.db.atomic import AtomicDB

from node.chain.consensus import chain_class
from node.chain.genesis import GenesisConfig
from node.chain.kvstore import SqliteStore

CHAIN_FILE = "chain.sqlite"


def open_chain(data_dir: Path, genesis: GenesisConfig) -> tuple[Chain, SqliteStore]:
    """The chain of ``data_dir`` for reading, also while its node runs (SQLite WAL); close
    the returned store when done. Raises ``ValueError`` when there is no chain."""
    path = data_dir / CHAIN_FILE
    if not path.exists():
        raise ValueError(f"{data_dir} holds no chain ({CHAIN_FILE} is missing)")
    store = SqliteStore(path)
    return chain_class(genesis.chain_id)(AtomicDB(store)), store


def canonical_blocks(chain: Chain, first: int, last: int) -> Iterator[BlockAPI]:
    """Blocks ``first..last`` of the canonical chain, in order."""
    for number in range(first, last + 1):
        yield chain.get_canonical_block_by_number(number)


def write_blocks(
    blocks: Iterator[BlockAPI], out: BinaryIO, progress: Callable[[int], None] | None = None
) -> int:
    """Write ``blocks`` RLP-encoded to ``out``; returns how many were written."""
    count = 0
    for block in blocks:
        out.write(rlp.encode(block))
        count += 1
        if progress is not None:
            progress(block.number)
    return count


def export_chain(
    chain: Chain,
    path: Path,
    first: int = 1,
    last: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write canonical blocks ``first..last`` (default: up to the head) to ``path`` in geth's
    format; returns the number of blocks. The file is replaced only when complete."""
    head = chain.get_canonical_head().block_number
    last = head if last is None else last
    if first < 1 or last > head or first > last + 1:
        raise ValueError(f"cannot export blocks {first}..{last}: the chain has blocks 1..{head}")
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        count = write_blocks(canonical_blocks(chain, first, last), out, progress)
    partial.replace(path)
    return count
