#!/usr/bin/env bash
# Headless Chromium and playwright-core, for the browser tests of the viewer
# and the HTML export (tests/test_viewer_browser.py). Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PLAYWRIGHT_CORE_VERSION=1.65.1

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing chromium (browser tests)"
    (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null; }) \
      || echo "[setup] could not install chromium; run: sudo apt-get install -y chromium"
  else
    echo "[setup] the browser tests need chromium; run: sudo apt-get install -y chromium"
  fi
fi

if [ ! -f "$VENV/node/node_modules/playwright-core/package.json" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "[setup] installing playwright-core $PLAYWRIGHT_CORE_VERSION into $VENV/node"
    npm install --silent --no-audit --no-fund --prefix "$VENV/node" "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null \
      || echo "[setup] npm install failed; run: npm install --prefix $VENV/node playwright-core@$PLAYWRIGHT_CORE_VERSION"
  else
    echo "[setup] the browser tests need Node.js and npm; run: sudo apt-get install -y nodejs npm"
  fi
fi
