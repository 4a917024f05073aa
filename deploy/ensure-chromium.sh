#!/usr/bin/env bash
# Debian's chromium, for tests/integration/test_status_page.py (the status page in a real
# headless browser, driven by the Python playwright package through executable_path: no
# browser download). Installed only when missing; `make test` runs it.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "chromium is missing, and installing Debian's 'chromium' package needs root:" >&2
    echo "  apt-get install chromium   (as root), then make test again" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "chromium is missing and this is no Debian/Ubuntu machine: install Chromium so that 'chromium' is on PATH" >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
