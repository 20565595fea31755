#!/usr/bin/env bash
# Make sure a headless browser is there for the dashboard's browser tests
# (tests/test_dashboard_browser.py): Debian's chromium at /usr/bin/chromium, driven by
# Playwright for Python (the `playwright` package of the dev extra) with that system
# browser, so nothing is downloaded outside the package registries.
#
#   scripts/browser.sh
#
# Installed with apt-get when missing and run as root; otherwise one line saying what
# to do (the browser tests then skip locally, and fail in CI).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
CHROMIUM="${QB_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    printf 'browser: %s\n' "$("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    printf 'browser: installing chromium (apt-get)\n'
    log="${TMPDIR:-/tmp}/queuebench-browser.log"
    if ! { apt-get update -q && apt-get install -y -q chromium; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        printf 'browser: ERROR: apt-get install chromium failed (log: %s)\n' "$log" >&2
        exit 1
    fi
    printf 'browser: %s\n' "$("$CHROMIUM" --version)"
    exit 0
fi
printf 'browser: no %s: install Debian'"'"'s chromium (sudo apt-get install chromium), or set QB_CHROMIUM\n' "$CHROMIUM" >&2
exit 1
