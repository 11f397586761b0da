#!/usr/bin/env bash
# The project's test command: ./run_tests.sh [PYTEST ARGS...]
#
# Creates .venv (python3 -m venv) when absent, installs the project and its test
# dependencies into it with pip, installs Debian's chromium and chromium-driver for the
# browser tests when they are missing and root or sudo can install them, checks the import
# layers (lint-imports), then runs pytest.
# Exits with pytest's status, except that "no tests collected" (pytest's 5) is a failure.
# The real scans are read from $BRATSEG_DATA (default ../shared/data beside the checkout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

say() { printf 'run_tests.sh: %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $(python3 --version 2>&1)"
    python3 -m venv .venv
fi
# pip, not uv or poetry: torch and torchvision's pinned wheels come from local disk with pip.
say "installing requirements.txt and the project (editable) into .venv"
# -qq: errors only (this machine's pip config warns about every missing local index folder).
.venv/bin/python -m pip install -qq --disable-pip-version-check -r requirements.txt -e .

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    :
else
    sudo_cmd=()
    can_install=1
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo_cmd=(sudo -n)
        else
            can_install=0
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || can_install=0
    if [ "$can_install" -eq 1 ]; then
        say "installing Debian's chromium and chromium-driver for the browser tests"
        if ! { "${sudo_cmd[@]}" apt-get update -qq &&
            "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
            say "notice: installing chromium failed; the browser tests will be skipped"
        fi
    else
        say "notice: chromium and chromedriver are not installed and this user cannot install them" \
            "(needs root or passwordless sudo, and apt-get); the browser tests will be skipped"
    fi
fi

# The stages import only downwards (the layers contract in pyproject.toml): checked before the tests.
say "checking the import layers (lint-imports)"
lint_log=$(mktemp)
if ! .venv/bin/lint-imports --no-cache >"$lint_log" 2>&1; then
    sed -n '/Broken contracts/,$p' "$lint_log" >&2
    rm -f "$lint_log"
    say "error: the import layers contract is broken"
    exit 1
fi
rm -f "$lint_log"

status=0
# UTF-8 mode: a library that resets the C locale (ITK does) must not turn text reads into ASCII.
PYTHONUTF8=1 .venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    say "error: pytest collected no tests"
    exit 1
fi
exit "$status"
