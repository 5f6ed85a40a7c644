#!/usr/bin/env bash
# Repository point lookups against pgbench -S, same PostgreSQL, same client
# count, same run. Prints a Markdown table for docs/benchmarks.md.
#
# Usage: scripts/bench-storage.sh [CLIENTS] [SECONDS]
# Needs: a local PostgreSQL (scripts/ensure-postgres.sh), pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-8}
seconds=${2:-10}
pg=postgres://postgres@127.0.0.1:5432

scripts/ensure-postgres.sh
# Fresh databases each run: one for pgbench's own tables, one for ours.
for db in orderflow_pgbench orderflow_bench; do
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
pgbench -q -i -s 10 -h 127.0.0.1 -U postgres orderflow_pgbench >/dev/null 2>&1
cargo build --quiet --release -p storage --benches

echo "running pgbench -S ($clients clients, ${seconds}s)..." >&2
pgbench_tps=$(pgbench -S -n -c "$clients" -j 2 -T "$seconds" -h 127.0.0.1 -U postgres orderflow_pgbench |
    awk '/^tps/ { print int($3) }')
echo "running repository lookups on PostgreSQL..." >&2
pg_line=$(BENCH_DATABASE_URL=$pg/orderflow_bench BENCH_CLIENTS=$clients BENCH_SECONDS=$seconds \
    cargo bench --quiet -p storage --bench point_lookups)
echo "running repository lookups on SQLite..." >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
sqlite_line=$(BENCH_DATABASE_URL=$scratch/bench.db BENCH_CLIENTS=$clients BENCH_SECONDS=$seconds \
    cargo bench --quiet -p storage --bench point_lookups)

per_second() { sed 's/.*"per_second":\([0-9]*\).*/\1/' <<<"$1"; }
pg_rate=$(per_second "$pg_line")
sqlite_rate=$(per_second "$sqlite_line")
ratio=$(awk -v a="$pg_rate" -v b="$pgbench_tps" 'BEGIN { printf "%.2f", a / b }')
sqlite_ratio=$(awk -v a="$sqlite_rate" -v b="$pgbench_tps" 'BEGIN { printf "%.2f", a / b }')

cat <<TABLE
Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(uname -m)), $clients clients, ${seconds}s each, release build.

| what | per second | vs \`pgbench -S\` |
|---|---|---|
| \`pgbench -S\` (1 indexed SELECT per transaction) | $pgbench_tps | 1.00 |
| \`Database::find_order\`, PostgreSQL (diesel-async, bb8) | $pg_rate | $ratio |
| \`Database::find_order\`, SQLite (SyncConnectionWrapper, WAL) | $sqlite_rate | $sqlite_ratio |
TABLE
