#!/usr/bin/env bash
# Install Prometheus (server + promtool) from Debian's package if it is not already on PATH.
# Used by .ci/run before the tests: tests/e2e/test_prometheus.py runs a real Prometheus.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    # Exit 3: "not installable here"; .ci/run then skips only the tests that need a real Prometheus.
    cat >&2 <<'TEXT'
install-prometheus.sh: apt-get not found, so Prometheus cannot be installed automatically.
  Install Prometheus 2.x so that `prometheus` and `promtool` are on PATH, then re-run:
    macOS:          brew install prometheus
    Fedora/RHEL:    sudo dnf install golang-github-prometheus
    Alpine:         sudo apk add prometheus
    Arch:           sudo pacman -S prometheus
    anywhere else:  the release tarball from https://prometheus.io/download/ (both binaries are in it)
TEXT
    exit 3
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# No recommends: skips the node exporter and the web console assets the tests don't need.
$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# (Where systemd runs, the package also starts a service on :9090; the tests use their own free port.)
echo "installed: $(prometheus --version 2>&1 | head -n1)"
