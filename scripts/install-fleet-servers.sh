#!/usr/bin/env bash
# Install redis-server and PostgreSQL from Debian's packages if they are not already there.
# Used by .ci/run: tests/e2e/test_fleet.py starts its own instances on loopback ports in temp dirs.
set -euo pipefail

if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "redis-server and PostgreSQL already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    # Exit 3: "not installable here"; .ci/run then skips only the tests that need these servers.
    cat >&2 <<'TEXT'
install-fleet-servers.sh: apt-get not found, so redis-server and PostgreSQL cannot be installed automatically.
  Install Redis (>= 6.2) and PostgreSQL (>= 13) so that `redis-server`, `initdb` and `pg_ctl` are on PATH, then re-run:
    macOS:          brew install redis postgresql@16
    Fedora/RHEL:    sudo dnf install redis postgresql-server
    Alpine:         sudo apk add redis postgresql
    Arch:           sudo pacman -S redis postgresql
TEXT
    exit 3
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
