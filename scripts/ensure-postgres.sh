#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster when it is installed but not running (the tests need it).
set -euo pipefail
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | head -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
        sleep 1
    done
fi
echo "PostgreSQL is not reachable on 127.0.0.1:5432: start it, or point LEADERBOARD_TEST_POSTGRES_URL at one" >&2
exit 1
