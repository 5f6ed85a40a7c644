#!/usr/bin/env bash
# The event store's size under steady ingest with retention on: the release
# server on a fresh SQLite file with ORDERFLOW_EVENT_RETENTION=RETENTION,
# PublishEvents at a fixed rate for MINUTES, and every 10 s the file's size
# (database plus WAL) and the events stored. Writes docs/retention-size.csv
# and docs/retention-size.svg (a plot drawn here, no plotting library). Once
# the oldest events reach the retention age, the count and the file size
# should level off: retention removes as fast as ingest adds, and SQLite
# reuses the freed pages.
#
# Usage: scripts/retention-size.sh [MINUTES] [RETENTION] [REQUESTS_PER_SECOND]
#        (defaults 20, 10m and 20: 2,000 events/s in batches of 100)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-20}
retention=${2:-10m}
rate=${3:-20}
root=$PWD
scratch=$(mktemp -d)
trap 'kill "${PID:-}" "${LOAD:-}" 2>/dev/null || true; rm -rf "$scratch"' EXIT

cargo build --quiet --release -p server -p loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
db=$scratch/store.db
env DATABASE_URL="$db" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$(free_port)" \
    ORDERFLOW_EVENT_RETENTION="$retention" RUST_LOG=warn taskset -c 0 target/release/orderflow >"$scratch/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
taskset -c 1 target/release/loadgen --target "http://127.0.0.1:$port" --workload publish --batch 100 \
    --concurrency 4 --rate "$rate" --duration "${minutes}m" --json >"$scratch/load.json" &
LOAD=$!
csv=$root/docs/retention-size.csv
echo "seconds,file_bytes,events" >"$csv"
start=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
    now=$(($(date +%s) - start))
    bytes=$(($(stat -c %s "$db" 2>/dev/null || echo 0) + $(stat -c %s "$db-wal" 2>/dev/null || echo 0)))
    events=$(sqlite3 "file:$db?mode=ro" "SELECT count(*) FROM events" 2>/dev/null || echo 0)
    echo "$now,$bytes,$events" >>"$csv"
    echo "${now}s: $((bytes / 1048576)) MB, $events events" >&2
    sleep 10
done
kill -TERM "$PID"
wait "$PID" || true
PID=

python3 - "$csv" "$root/docs/retention-size.svg" "$retention" "$rate" <<'PY'
import csv, sys
rows = [(int(r["seconds"]), int(r["file_bytes"]), int(r["events"])) for r in csv.DictReader(open(sys.argv[1]))]
w, h, pad = 720, 360, 50
tmax = max(r[0] for r in rows) or 1
bmax = max(r[1] for r in rows) or 1
emax = max(r[2] for r in rows) or 1
def line(values, vmax, colour):
    pts = " ".join(f"{pad + (w - 2 * pad) * t / tmax:.1f},{h - pad - (h - 2 * pad) * v / vmax:.1f}" for t, v in values)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>'
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
       f'<rect width="{w}" height="{h}" fill="white"/>',
       f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
       f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
       line([(r[0], r[1]) for r in rows], bmax, "#1f77b4"),
       line([(r[0], r[2]) for r in rows], emax, "#d62728"),
       f'<text x="{pad}" y="{pad - 20}">Event store under steady ingest ({sys.argv[4]} x 100 events/s), retention {sys.argv[3]}</text>',
       f'<text x="{pad}" y="{pad - 5}" fill="#1f77b4">file size (max {bmax / 1048576:.0f} MB)</text>',
       f'<text x="{pad + 220}" y="{pad - 5}" fill="#d62728">events stored (max {emax:,})</text>',
       f'<text x="{w - pad}" y="{h - pad + 20}" text-anchor="end">{tmax} s</text>',
       f'<text x="{pad}" y="{h - pad + 20}">0 s</text>', '</svg>']
open(sys.argv[2], "w").write("\n".join(svg) + "\n")
PY
echo "wrote $csv and docs/retention-size.svg" >&2
