#!/usr/bin/env bash
# Fails if the PostgreSQL halves of the test suites were compiled out or
# renamed. (ORDERFLOW_REQUIRE_POSTGRES=1 already turns a missing database
# into test failures; this guards the other way of not running them.)
set -euo pipefail
cd "$(dirname "$0")/.."
pg_tests=$(cargo test --quiet -p storage --test integration -- --list 2>/dev/null | grep -c '^postgres::.*: test$' || true)
echo "PostgreSQL tests in the storage suite: $pg_tests"
[ "$pg_tests" -ge 15 ] || { echo "the PostgreSQL suite is missing"; exit 1; }
rpc_pg=$(cargo test --quiet -p grpc-api --test integration -- --list 2>/dev/null | grep -c '^postgres::.*: test$' || true)
echo "PostgreSQL in-process RPC tests: $rpc_pg"
[ "$rpc_pg" -ge 9 ] || { echo "the PostgreSQL RPC suite is missing"; exit 1; }
e2e_pg=$(cargo test --quiet -p server --test integration -- --list 2>/dev/null | grep -c '^postgres::.*: test$' || true)
echo "PostgreSQL end-to-end tests: $e2e_pg"
[ "$e2e_pg" -ge 7 ] || { echo "the PostgreSQL end-to-end suite is missing"; exit 1; }
