#!/usr/bin/env bash
# Soak: the real server on PostgreSQL (through a proxy the script can cut)
# under a steady mixed load at 80% of the capacity measured first, with 1%
# of GetOrder calls panicking (failpoint) and one PostgreSQL cut of 15 s
# half-way. Every 10 s it samples resident memory, open file descriptors,
# OK requests/s, errors/s and p99 latency (from the server's histogram),
# then plots them and says whether memory, descriptors and p99 ended flat.
# (Short runs cut PostgreSQL a quarter of the way in instead.)
#
#   scripts/soak.sh            # the full form: 600 s, release build, plot
#                              # to docs/soak.svg (docs/soak.md records it)
#   SOAK_PROFILE=debug scripts/soak.sh 90
#                              # CI's quick form: the binaries `cargo test`
#                              # built, output under target/soak/ only
#
# Exits non-zero if a verdict fails or the server dies.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
profile=${SOAK_PROFILE:-release}
out=target/soak
mkdir -p "$out"
rm -f "$out/metrics-address"

# Debug reuses what the tests built (the server binary with failpoints);
# loadgen's binary is not among them.
if [ "$profile" = release ]; then
    cargo build --quiet --release -p server --features server/failpoints -p loadgen
else
    cargo build --quiet -p server --features server/failpoints -p loadgen
fi
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/$profile/orderflow
loadgen=$target_dir/$profile/loadgen
scripts/ensure-postgres.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proxy_port=$(free_port)
grpc_port=$(free_port)
metrics_port=$(free_port)
db=orderflow_soak
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 scripts/soak/pgproxy.py "$proxy_port" 5432 >"$out/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
pin_server=() pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_server=(taskset -c 0) pin_load=(taskset -c 1)
fi
DATABASE_URL="postgres://postgres@127.0.0.1:$proxy_port/$db" \
ORDERFLOW_LISTEN="127.0.0.1:$grpc_port" \
ORDERFLOW_METRICS_LISTEN="127.0.0.1:$metrics_port" \
ORDERFLOW_DB_TIMEOUT=1s \
FAILPOINTS='grpc-get-order=1%panic(soak)' \
RUST_LOG=warn \
    "${pin_server[@]}" "$bin" >"$out/server.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null && break
    sleep 0.1
done

# For scripts/dashboard.sh, whose Prometheus scrapes this server.
echo "127.0.0.1:$metrics_port" >"$out/metrics-address"

target="http://127.0.0.1:$grpc_port"
load=(--target "$target" --workload mix --mix get-hit=80,create=10,publish=5,health=5
      --concurrency 16 --seed-orders "$([ "$profile" = release ] && echo 2000 || echo 200)" --json)
capacity=$("${pin_load[@]}" "$loadgen" "${load[@]}" --duration 15s | tail -1)
rps=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"])' "$capacity")
rate=$(python3 -c "print(round($rps * 0.8))")
echo "capacity: $rps requests/s on the mix; soaking at $rate/s for ${seconds}s" >&2

stop="$out/stop"
rm -f "$stop"
python3 scripts/soak/sample.py "$server" "127.0.0.1:$metrics_port" 10 "$stop" >"$out/soak.csv" &
sampler=$!
pids+=("$sampler")
"${pin_load[@]}" "$loadgen" "${load[@]}" --rate "$rate" --duration "${seconds}s" >"$out/load.json" &
loader=$!
pids+=("$loader")

# Half-way in the full form; a quarter in, in short runs, so the last
# samples are well after the recovery.
if [ "$seconds" -ge 300 ]; then cut_start=$((seconds / 2)); else cut_start=$((seconds / 4)); fi
cut_end=$((cut_start + 15))
sleep "$cut_start"
kill -USR1 "$proxy"
echo "PostgreSQL cut at ${cut_start}s" >&2
sleep 15
kill -USR2 "$proxy"
echo "PostgreSQL restored at ${cut_end}s" >&2
wait "$loader"
touch "$stop"
wait "$sampler" || true
kill -0 "$server" || { echo "the server died" >&2; exit 1; }

title="orderflow soak, $(date -u +%Y-%m-%d), $(nproc) cores: ${seconds}s at $rate req/s (80% of capacity), 1% panics"
python3 scripts/soak/plot.py "$out/soak.csv" "$cut_start" "$cut_end" "$title" >"$out/soak.svg"
if [ "$profile" = release ] && [ "$seconds" -ge 600 ]; then
    cp "$out/soak.svg" docs/soak.svg
    cp "$out/soak.csv" docs/soak.csv
fi
echo "load: $(cat "$out/load.json")" >&2

# Verdicts: the last minute against the minute after warm-up (60-120 s; in
# a short run, the samples in the half before the cut and those from 15 s
# after it).
python3 - "$out/soak.csv" "$seconds" "$cut_start" "$cut_end" <<'PY'
import csv, statistics, sys
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
seconds, cut_start, cut_end = (float(a) for a in sys.argv[2:5])
warm_from, warm_to = (60, 120) if seconds >= 300 else (cut_start / 2, cut_start)
late_from = max(cut_end + 15, seconds - 60)
early = [r for r in rows if warm_from <= r["seconds"] <= warm_to] or rows[:2]
late = [r for r in rows if late_from <= r["seconds"] <= seconds] or rows[-2:]
med = lambda rs, k: statistics.median(r[k] for r in rs)
checks = [
    ("resident memory (MB)", med(early, "rss_mb"), med(late, "rss_mb"), lambda a, b: b <= a * 1.10 + 8),
    ("file descriptors", med(early, "fds"), med(late, "fds"), lambda a, b: b <= a + 20),
    ("p99 latency (ms)", med(early, "p99_ms"), med(late, "p99_ms"), lambda a, b: b <= max(a * 3, a + 5)),
    ("OK requests/s", med(early, "requests_per_s"), med(late, "requests_per_s"), lambda a, b: b >= a * 0.7),
]
failed = False
print("| measure | after warm-up | last minute | flat |")
print("|---|---|---|---|")
for name, a, b, ok in checks:
    good = ok(a, b)
    failed |= not good
    print(f"| {name} | {a:.1f} | {b:.1f} | {'yes' if good else 'NO'} |")
sys.exit(1 if failed else 0)
PY
