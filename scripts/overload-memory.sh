#!/usr/bin/env bash
# Resident memory while a producer outruns the pipeline, with the default
# queue and with a 100,000-slot queue (sized by throughput instead of memory). Prints a Markdown table for
# docs/benchmarks.md.
#
# Usage: scripts/overload-memory.sh [SECONDS]   (default 60 each)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cargo build --quiet --release -p transform-engine --example overload
bin=target/release/examples/overload
field() { sed "s/.*\"$1\":\([0-9]*\).*/\1/" <<<"$2"; }

echo "| queue capacity | policy | start RSS | peak RSS | end RSS | events offered | stored | shed |"
echo "|---|---|---|---|---|---|---|---|"
for capacity in 512 100000; do
    summary=$("$bin" --capacity "$capacity" --seconds "$seconds" | tail -1)
    policy=$(sed 's/.*"policy":"\([^"]*\)".*/\1/' <<<"$summary")
    mb() { awk -v kb="$1" 'BEGIN { printf "%.1f MB", kb / 1024 }'; }
    echo "| $capacity | $policy | $(mb "$(field rss_start_kb "$summary")") | $(mb "$(field rss_peak_kb "$summary")") |" \
        "$(mb "$(field rss_end_kb "$summary")") | $(field produced "$summary") | $(field processed "$summary") |" \
        "$(field dropped "$summary") |"
done
echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, ${seconds}s per run, release build."
