#!/usr/bin/env bash
# Install headless Chromium + chromedriver from Debian packages for the browser test
# (tests/test_web.py). Idempotent: does nothing when both binaries are already present.
# Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver explicitly, so nothing
# is ever downloaded by Selenium Manager.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium and chromedriver already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not available: install Chromium and chromedriver by hand to run tests/test_web.py"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "not root and no sudo: cannot install chromium; tests/test_web.py will be skipped"
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
echo "installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
