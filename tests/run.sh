#!/usr/bin/env bash
# One command that sets up a fresh machine and runs the test suite:
#   bash tests/run.sh [pytest args]
# Installs the Debian packages the tests talk to (real peers on loopback) and the Python
# test extra, then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(mbpoll socat influxdb victoria-metrics docker-compose chromium mosquitto)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"

# node-opcua: an OPC UA server we did not write, for the interop tests (tests/node_opcua).
if [ ! -d tests/node_opcua/node_modules ]; then
    if ! command -v npm >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
    fi
    (cd tests/node_opcua && npm ci --no-audit --no-fund --loglevel=error)
fi

python3 -m ruff check .
python3 -m mypy  # the typed core: anomaly, gateway, api ([tool.mypy] in pyproject.toml)

# CI runs the reliability suite (pytest -m reliability) at a fifth of the issue's durations:
# 2-minute soak, 1-minute InfluxDB outage ... Set SCADAWATCH_RELIABILITY_SCALE=1 for the full ones.
if [ -n "${CI:-}" ]; then
    export SCADAWATCH_RELIABILITY_SCALE="${SCADAWATCH_RELIABILITY_SCALE:-0.2}"
fi

# Two workers (pytest-xdist), each taking whole files, so a file's module fixtures (a real
# InfluxDB, a recorded export) start once; most tests wait on sockets and child processes, so
# two overlap well even on two cores. SCADAWATCH_TEST_WORKERS=0 runs them in this process.
set +e
python3 -m pytest -q -p no:cacheprovider -n "${SCADAWATCH_TEST_WORKERS:-2}" --dist loadfile "$@"
status=$?
set -e
# pytest exits 5 when it collected no test: a selection that matched nothing is not a failure.
if [ "$status" -eq 5 ]; then
    echo "pytest: no tests collected"
    exit 0
fi
exit "$status"
