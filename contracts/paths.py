"""Where the project keeps its sources, tools and generated files."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
NODE_MODULES = PROJECT_ROOT / "node_modules"
SOLC_EXECUTABLE = Path(__file__).resolve().parent / "solc" / "solc-standard-json.js"


def build_dir() -> Path:
    """Compiled-artifact cache; ``LEC_BUILD_DIR`` overrides ``<project>/build``."""
    return Path(os.environ.get("LEC_BUILD_DIR", PROJECT_ROOT / "build"))
