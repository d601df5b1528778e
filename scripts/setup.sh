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

# Debian packages some tests need (a real MQTT broker); installed when we may, else skipped.
SYSTEM_PACKAGES=(mosquitto)
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
