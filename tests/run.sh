#!/usr/bin/env bash
# README's test command (and CI's, in .ci/run): Debian's chromium and chromium-driver for the
# dashboard's browser tests when they are missing, the package with its dev and train extras,
# then pytest with whatever arguments were given. The browser install never fails the run: the
# browser tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

browser_missing() {
    [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]
}

install_browser() {
    local as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            as_root=(sudo -n)
        else
            echo "not root and sudo -n does not work"
            return 1
        fi
    fi
    if ! "${as_root[@]}" apt-get update -q >&2 \
        || ! "${as_root[@]}" apt-get install -y -q chromium chromium-driver >&2; then
        echo "apt-get could not install chromium and chromium-driver"
        return 1
    fi
    if browser_missing; then
        echo "apt-get ran, yet /usr/bin/chromium or /usr/bin/chromedriver is still missing"
        return 1
    fi
}

if browser_missing; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: browser tests will skip: /usr/bin/chromium or /usr/bin/chromedriver" \
             "is missing and there is no apt-get to install them"
    elif ! why=$(install_browser); then
        echo "tests/run.sh: browser tests will skip: ${why}"
    fi
fi

pip install -c .ci/constraints.txt -e '.[dev,train]'
exec python -m pytest "$@"
