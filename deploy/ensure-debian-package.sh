#!/usr/bin/env bash
# A Debian package the tests need, installed only when one of its commands is missing:
#   ensure-debian-package.sh PACKAGE COMMAND [COMMAND...]
# `make test` runs it for prometheus (promtool too) and chromium. Needs root, or sudo -n.
set -euo pipefail
package=$1
shift
missing=0
for command in "$@"; do
  command -v "$command" >/dev/null || missing=1
done
if [ "$missing" = 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "$* missing, and installing Debian's '$package' package needs root:" >&2
    echo "  apt-get install $package   (as root), then make test again" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "$* missing and this is no Debian/Ubuntu machine: install $package so that $* are on PATH" >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
for command in "$@"; do
  command -v "$command" >/dev/null
done
