#!/usr/bin/env bash
# A cached GetOrder against grpc.health.v1.Health/Check on the same server,
# driven by h2load (nghttp2's C load generator, independent of our tonic
# client): one connection, 16 and then 64 streams, ROUNDS alternating
# rounds of REQUESTS requests each. Per run: requests/s, p50/p99 latency
# (from h2load's per-request log) and the server's CPU time per request
# (from /proc, which is steadier than throughput on a noisy VM). Prints
# one tab-separated line per run:
#   streams  rpc  requests_per_second  p50_us  p99_us  cpu_us_per_request
# then one `ratio` line per stream count: the median over rounds of
# GetOrder/Health throughput. The server (release build, SQLite, default
# settings: RUST_LOG=info, so each request gets its span) runs on CPU 0,
# h2load on CPU 1. Extra server settings can be passed as ENV=VALUE
# arguments; BEARER=credential (a token or a JWT) sends
# `authorization: Bearer <credential>` on every request (seeding included),
# for a server with principals. Every GetOrder must answer OK (checked on
# the server's /metrics: h2load counts a gRPC error as a success).
#
# Usage: scripts/bench-hit.sh [REQUESTS] [ROUNDS] [ENV=VALUE...]
#        (defaults 30000 and 9: short alternating rounds, whose median
#        ratio is steadier on a noisy VM than a few long runs; about a
#        minute)
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-30000}
rounds=${2:-9}
shift $(($# < 2 ? $# : 2))
command -v h2load >/dev/null || {
    echo "h2load is missing: apt-get install nghttp2-client" >&2
    exit 1
}
root=$PWD
scratch=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$scratch"' EXIT
# BIN_DIR=dir runs that directory's orderflow and loadgen (to compare two
# builds) instead of building this tree's.
bin_dir=${BIN_DIR:-$root/target/release}
[ "${SKIP_BUILD:-0}" = 1 ] || [ -n "${BIN_DIR:-}" ] || cargo build --quiet --release -p server -p loadgen
bin=$bin_dir/orderflow
lg=$bin_dir/loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
metrics_port=$(free_port)
auth_header=()
token_arg=()
if [ -n "${BEARER:-}" ]; then
    auth_header=(-H "authorization: Bearer $BEARER")
    token_arg=(--token "$BEARER")
fi
env DATABASE_URL="$scratch/hit.db" ORDERFLOW_LISTEN="127.0.0.1:$port" \
    ORDERFLOW_METRICS_LISTEN="127.0.0.1:$metrics_port" "$@" \
    taskset -c 0 "$bin" >"$scratch/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
taskset -c 1 "$lg" --target "http://127.0.0.1:$port" "${token_arg[@]}" --workload get-hit --seed-orders 100 \
    --write-bodies "$scratch/bodies" >/dev/null

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
run() { # STREAMS BODY PATH NAME
    local before after
    before=$(cpu_ticks)
    taskset -c 1 h2load -n "$requests" -c 1 -m "$1" -d "$scratch/bodies/$2" \
        -H 'content-type: application/grpc' -H 'te: trailers' "${auth_header[@]}" \
        --log-file "$scratch/requests.log" "http://127.0.0.1:$port/$3" >"$scratch/h2load.out"
    after=$(cpu_ticks)
    grep -q "$requests succeeded" "$scratch/h2load.out" || {
        echo "h2load: not every $4 request succeeded:" >&2
        cat "$scratch/h2load.out" >&2
        exit 1
    }
    # h2load's log: start time, HTTP status, latency in microseconds.
    python3 - "$scratch/h2load.out" "$scratch/requests.log" "$1" "$4" "$((after - before))" \
        "$(getconf CLK_TCK)" "$requests" <<'EOF'
import re, sys
out, log, streams, name, ticks, hz, n = sys.argv[1:]
rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", open(out).read()).group(1))
lat = sorted(int(line.split()[2]) for line in open(log))
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
cpu = int(ticks) / int(hz) / int(n) * 1e6
print(f"{streams}\t{name}\t{rps:.0f}\t{pct(0.5)}\t{pct(0.99)}\t{cpu:.1f}")
EOF
}

# A warm-up pass, not reported.
run 16 get-order.bin orderflow.v1.OrderService/GetOrder GetOrder >/dev/null
for streams in 16 64; do
    for _ in $(seq 1 "$rounds"); do
        run "$streams" health.bin grpc.health.v1.Health/Check Health
        run "$streams" get-order.bin orderflow.v1.OrderService/GetOrder GetOrder
    done
done | tee "$scratch/runs.tsv"
# h2load counts HTTP status 200 as success; the gRPC status is in the
# trailers. Every GetOrder must have answered OK.
not_ok=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^orderflow_grpc_requests_total/ && /method="GetOrder"/ && !/code="OK"/ { n += $NF } END { print n + 0 }')
[ "$not_ok" = 0 ] || {
    echo "$not_ok GetOrder requests did not answer OK (see the server's log: $scratch/server.log)" >&2
    exit 1
}
# With a JWT: how many signatures the server checked (its cache makes it one).
curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^orderflow_jwt_verifications_total / { print "jwt_verifications\t" $2 }'
python3 - "$scratch/runs.tsv" <<'EOF'
import statistics, sys
runs = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
for streams in ("16", "64"):
    health = [float(r[2]) for r in runs if r[0] == streams and r[1] == "Health"]
    get = [float(r[2]) for r in runs if r[0] == streams and r[1] == "GetOrder"]
    ratios = [g / h for g, h in zip(get, health)]
    cpu = lambda name: statistics.median(float(r[5]) for r in runs if r[0] == streams and r[1] == name)
    print(f"ratio\t{streams}\t{statistics.median(ratios):.2f}\t(rounds: {' '.join(f'{r:.2f}' for r in ratios)}; "
          f"CPU per request GetOrder {cpu('GetOrder')} us vs Health {cpu('Health')} us)")
EOF
