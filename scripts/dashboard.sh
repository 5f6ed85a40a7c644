#!/usr/bin/env bash
# The Grafana dashboard (deploy/grafana/orderflow.json) over a soak run, drawn
# without Grafana (no package of it installs here): a Prometheus scrapes the
# soak's server every 5 s, then scripts/dashboard/render.py has that
# Prometheus evaluate every panel's queries over the run and draws them, in
# the dashboard's layout, as docs/dashboard.svg.
#
#   scripts/dashboard.sh [SECONDS]    # default 300 (scripts/soak.sh's run)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
out=target/dashboard
rm -rf "$out"
mkdir -p "$out"
command -v prometheus >/dev/null || { echo "needs prometheus (Debian: apt-get install prometheus)" >&2; exit 1; }

scripts/soak.sh "$seconds" >"$out/soak.log" 2>&1 &
soak=$!
prometheus_pid=
trap 'kill $soak $prometheus_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 1800); do
    [ -s target/soak/metrics-address ] && break
    kill -0 $soak 2>/dev/null || { cat "$out/soak.log" >&2; exit 1; }
    sleep 0.5
done
address=$(cat target/soak/metrics-address)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$out/prometheus.yml" <<YML
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: orderflow
    static_configs:
      - targets: ["$address"]
YML
prometheus --config.file="$out/prometheus.yml" --storage.tsdb.path="$out/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$out/prometheus.log" 2>&1 &
prometheus_pid=$!
start=$(date +%s)
status=0
wait $soak || status=$?
end=$(date +%s)
title="orderflow dashboard (deploy/grafana/orderflow.json) over scripts/soak.sh $seconds, $(date -u +%Y-%m-%d), $(nproc) cores; queries evaluated by Prometheus, drawn by scripts/dashboard/render.py"
python3 scripts/dashboard/render.py deploy/grafana/orderflow.json "http://127.0.0.1:$port" \
    "$start" "$end" "$title" >"$out/dashboard.svg"
cp "$out/dashboard.svg" docs/dashboard.svg
tail -5 "$out/soak.log"
echo "docs/dashboard.svg written (soak exit status $status)"
exit $status
