#!/usr/bin/env bash
# The test command (README): every test in the workspace, against the real
# databases.
#
# PostgreSQL tests read ORDERFLOW_TEST_DATABASE_URL. If it is unset and a
# server answers on 127.0.0.1:5432, that one is used (database `test`, user
# `postgres`); each test isolates itself in its own schema and drops it.
# Without a server the PostgreSQL tests are skipped with a loud notice, unless
# ORDERFLOW_REQUIRE_POSTGRES=1 (CI sets it), which makes them fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ORDERFLOW_TEST_DATABASE_URL:-}" ] && command -v pg_isready >/dev/null \
    && pg_isready -q -h 127.0.0.1 -p 5432; then
    export ORDERFLOW_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
fi
if [ -z "${ORDERFLOW_TEST_DATABASE_URL:-}" ]; then
    echo "warning: ORDERFLOW_TEST_DATABASE_URL unset and no PostgreSQL on 127.0.0.1:5432;" \
        "PostgreSQL tests will be skipped" >&2
fi

# Snapshots are reviewed, never silently rewritten by a test run.
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
cargo test --workspace --all-targets --quiet "$@"
