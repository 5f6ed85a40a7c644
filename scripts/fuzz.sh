#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo-fuzz, nightly toolchain), each
# for SECONDS, from the seeds in fuzz/seeds/ plus the corpus kept in
# fuzz/corpus/ by earlier runs, and prints one summary line per target:
# executions, coverage, corpus size, crashes.
#
#   scripts/fuzz.sh 600            # the full run (docs/fuzzing.md): 10 min each
#   scripts/fuzz.sh 12             # CI's smoke run: 12 s a target
#   scripts/fuzz.sh 60 event_json  # some targets only
#
# A crash stops that target, leaves its input in fuzz/artifacts/TARGET/, and
# makes the script exit non-zero after the others ran.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(proto_requests event_json import_lines pipeline_toml grpc_timeout log_batch event_batch_one_pass)
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
if ! build=$(cargo +nightly fuzz build -O 2>&1); then
  echo "$build" >&2
  exit 1
fi

failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  # Git keeps no empty directories: a target without seeds has none here.
  seeds=()
  if [ -d "seeds/$target" ]; then seeds=("seeds/$target"); fi
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$log" 2>&1; then
    crashes=0
  else
    crashes=1
    failed=1
    echo "$target failed; the end of its log:" >&2
    tail -20 "$log" >&2
  fi
  execs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1 || true)
  cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1 | grep -oE "[0-9]+" || true)
  corpus=$(find "corpus/$target" -type f | wc -l)
  printf '%-15s %6ss  executions %-10s coverage %-6s corpus %-6s crashes %s\n' \
    "$target" "$seconds" "${execs:-?}" "${cov:-?}" "$corpus" "$crashes"
  rm -f "$log"
done
exit "$failed"
