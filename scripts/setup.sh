#!/usr/bin/env bash
# Idempotent set-up: Python virtual environment and npm packages.
# Re-installs only when pyproject.toml or package-lock.json changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  log "Python 3.11 not found (set PYTHON=/path/to/python3.11)"; exit 1
}

stamp_ok() {  # stamp_ok STAMPFILE INPUT...: true when the inputs did not change
  local want; want=$(cat "${@:2}" | sha256sum | cut -d' ' -f1)
  [ -f "$1" ] && [ "$(cat "$1")" = "$want" ]
}
write_stamp() { cat "${@:2}" | sha256sum | cut -d' ' -f1 > "$1"; }

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  log "creating virtual environment with $py"
  "$py" -m venv .venv
fi
if ! stamp_ok .venv/.lec-installed pyproject.toml; then
  log "installing Python packages (pip install -e .[dev])"
  { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[dev]"; } \
    > .venv/pip-install.log 2>&1 || { tail -40 .venv/pip-install.log >&2; log "pip install failed (log: .venv/pip-install.log)"; exit 1; }
  write_stamp .venv/.lec-installed pyproject.toml
fi

if ! command -v node >/dev/null 2>&1; then
  log "Node.js 20 not found on PATH; it is needed for the Solidity compiler"; exit 1
fi
if ! stamp_ok node_modules/.lec-installed package-lock.json; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  write_stamp node_modules/.lec-installed package-lock.json
fi

# Debian packages some tests need (a real MQTT broker; a real browser for the web pages);
# installed when we may, else the tests that need them are skipped.
SYSTEM_PACKAGES=(mosquitto chromium)
missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
  command -v "$package" >/dev/null 2>&1 || [ -x "/usr/sbin/$package" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
      || log "could not install ${missing[*]}; tests that need them are skipped"
  else
    log "not installed: ${missing[*]} (tests that need them are skipped)"
  fi
fi

# geth 1.13.15, the last release that seals and validates Clique: the multi-node network
# (`lec network geth`) and the re-validation of the embedded chain. Built once with the Go
# toolchain from the Go module proxy into a cache kept across clones (node/geth.py finds it).
GETH_VERSION=1.13.15
GETH_HOME="${XDG_CACHE_HOME:-$HOME/.cache}/lec-node/geth-v$GETH_VERSION"
if [ -z "${LEC_GETH:-}" ] && [ ! -x "$GETH_HOME/geth" ]; then
  if command -v go >/dev/null 2>&1; then
    log "building geth $GETH_VERSION with Go into $GETH_HOME (once; a few minutes)"
    mkdir -p "$GETH_HOME"
    package="github.com/ethereum/go-ethereum/cmd/geth@v$GETH_VERSION"
    # -checklinkname=0: the documented work-around for fjl/memsize on Go >= 1.23
    if ! GOBIN="$GETH_HOME" go install -ldflags=-checklinkname=0 "$package" > "$GETH_HOME/build.log" 2>&1 &&
       ! GOBIN="$GETH_HOME" go install "$package" >> "$GETH_HOME/build.log" 2>&1; then
      tail -20 "$GETH_HOME/build.log" >&2
      log "could not build geth $GETH_VERSION (log: $GETH_HOME/build.log); the geth tests will fail"
    fi
  else
    log "Go not found: geth $GETH_VERSION is not built (lec network geth and its tests need it)"
  fi
fi
