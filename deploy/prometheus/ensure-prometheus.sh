#!/usr/bin/env bash
# Debian's Prometheus and promtool, for tests/integration/test_observability.py (a real
# Prometheus scraping the embedded stack). Installed only when missing; `make test` runs it.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
bash "$(dirname "$0")/../ensure-debian-package.sh" prometheus prometheus promtool
# The package starts its own server where systemd runs; the test starts one of its own.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
