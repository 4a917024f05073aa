#!/usr/bin/env bash
# Debian's Prometheus and promtool, for tests/integration/test_observability.py (a real
# Prometheus scraping the embedded stack). Installed only when missing; `make test` runs it.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "prometheus and promtool are missing, and installing Debian's 'prometheus' package needs root:" >&2
    echo "  apt-get install prometheus   (as root), then make test again" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "prometheus and promtool are missing and this is no Debian/Ubuntu machine: install Prometheus 2.x or newer so both are on PATH" >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts its own server where systemd runs; the test starts one of its own.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null
