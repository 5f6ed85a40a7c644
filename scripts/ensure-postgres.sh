#!/usr/bin/env bash
# Starts the machine's PostgreSQL cluster if it is not answering, and waits
# until it does. Prints nothing on success when it was already up.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432; then
    exit 0
fi
echo "PostgreSQL is down; starting it" >&2
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
    sleep 1
done
echo "PostgreSQL did not come up within 30 s" >&2
exit 1
