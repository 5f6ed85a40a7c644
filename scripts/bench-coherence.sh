#!/usr/bin/env bash
# Cache coherence across replicas: three replicas on one PostgreSQL
# (scripts/cluster.sh), 1,000 status updates through replica 1, each timed
# from its acknowledgement until replicas 2 and 3 (which had the previous
# version cached) return the new version. The same run reports a GetOrder
# round trip on a reader, the polling granularity. Prints a Markdown row for
# docs/benchmarks.md.
#
# Usage: scripts/bench-coherence.sh [WRITES]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
writes=${1:-1000}
export CLUSTER_SCHEMA=bench_coherence_$$
trap 'scripts/cluster.sh down >/dev/null; PGOPTIONS="-c client_min_messages=warning" psql -q postgres://postgres@127.0.0.1:5432/test -c "DROP SCHEMA IF EXISTS $CLUSTER_SCHEMA CASCADE" >/dev/null 2>&1 || true' EXIT
cargo build --quiet --release -p server -p loadgen
scripts/cluster.sh up 3 >/dev/null
out=$(target/release/loadgen --json --workload coherence --requests "$writes" \
    --target http://127.0.0.1:50061 \
    --read-targets http://127.0.0.1:50062,http://127.0.0.1:50063)
echo "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("| writes | readers | delay p50 (ms) | p99 (ms) | max (ms) | read round trip p50 (ms) |")
print("|---|---|---|---|---|---|")
print("| %d | %d | %.2f | %.2f | %.2f | %.2f |" % (r["writes"], r["readers"], r["delay_p50_ms"], r["delay_p99_ms"], r["delay_max_ms"], r["read_p50_ms"]))
'
