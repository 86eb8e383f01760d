#!/bin/sh
# Checks Switchyard's alerting with promtool: the rules parse (`check rules`), the Prometheus config that loads them
# is valid (`check config`), and the rules' unit tests pass (`test rules`).
#
# Usage: tests/alerts/check.sh [REPO_ROOT]   (default: two directories above this script)
# Exit status: 0 all passed; 1 a check failed; 77 promtool is not installed (callers may treat it as "skipped").
set -u

root=${1:-$(dirname "$0")/../..}
cd "$root" || { echo "check.sh: cannot enter $root" >&2; exit 1; }

if ! command -v promtool >/dev/null 2>&1; then
    echo "check.sh: promtool is not installed (Debian: apt-get install prometheus)" >&2
    exit 77
fi

status=0
run() {
    echo "+ $*"
    if ! "$@"; then
        echo "check.sh: FAILED: $*" >&2
        status=1
    fi
}

run promtool check rules config/alerts.yml
run promtool check config config/prometheus.yml
run promtool test rules tests/alerts/alerts.test.yml

exit $status
