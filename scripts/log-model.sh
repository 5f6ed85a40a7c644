#!/usr/bin/env bash
# The model-based test of the acknowledged-ingest log (proptest state
# machine, crates/transform-engine/tests/integration/log_model.rs) in its long
# form. CI runs the quick form (64 cases) inside scripts/test.sh.
#
# Usage: scripts/log-model.sh [CASES]   (default 2000)
# Prints the cases run and the time taken; a failure prints the shrunk
# sequence of steps that breaks an invariant (record it in docs/log-model.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-2000}
started=$(date +%s)
LOG_MODEL_CASES=$cases cargo test --quiet --release -p transform-engine --test integration log_model
echo "log model: $cases cases in $(( $(date +%s) - started )) s"
