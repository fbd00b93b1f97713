#!/usr/bin/env bash
# Install redis-server and PostgreSQL from Debian's packages if they are not already there.
# Used by .ci/run: tests/e2e/test_fleet.py starts its own instances on loopback ports in temp dirs.
set -euo pipefail

if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "redis-server and PostgreSQL already installed"
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The packages' own services are not needed (and are not started in containers); the tests run their own.
$sudo apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null
echo "installed: $(redis-server --version | head -n1); $(ls /usr/lib/postgresql)"
