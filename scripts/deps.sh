#!/bin/sh
# Makes sure the Debian packages understudy needs are installed.
#
#   scripts/deps.sh            build, test and demo dependencies
#   scripts/deps.sh --dev      also the lint/format/valgrind tools
#
# As root, installs what is missing with apt-get.  Otherwise prints the exact
# apt-get line to run and exits 1.  Exits 0 at once when nothing is missing.
set -eu

PKGS="build-essential pkg-config librdkafka-dev libpq-dev libyaml-dev libcmocka-dev \
libjansson-dev libmicrohttpd-dev postgresql kcat python3-xgboost python3-numpy time chromium fonts-dejavu-core"
DEV_PKGS="clang-format clang-tidy cppcheck valgrind"

case "${1:-}" in
--dev) PKGS="$PKGS $DEV_PKGS" ;;
"") ;;
*) echo "usage: scripts/deps.sh [--dev]" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: no dpkg-query: not a Debian system; install the equivalents of:" >&2
    echo "  $PKGS" >&2
    exit 0
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: run: sudo apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done"
