#!/usr/bin/env bash
# Every check CI runs, in order; `.ci/run` (this machine) and the GitHub
# workflow both call this, so a person runs exactly what CI runs. Expects
# PostgreSQL reachable at ORDERFLOW_TEST_DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

section "fmt"
cargo fmt --all -- --check

section "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

section "check-unwrap"
scripts/check-unwrap.sh

section "lints bite"
scripts/check-lints-bite.sh

section "architecture"
scripts/check-architecture.sh

section "workflows (actionlint)"
actionlint

section "alerting rules (promtool)"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)

section "dependencies (cargo deny: bans, licenses, sources)"
if command -v cargo-deny >/dev/null; then
    cargo deny --locked check bans licenses sources
else
    echo "cargo-deny not installed here; the GitHub workflow runs it (cargo install --locked cargo-deny)"
fi

section "test (README: scripts/test.sh)"
export INSTA_UPDATE=no
scripts/test.sh

section "postgres suites ran"
# ORDERFLOW_REQUIRE_POSTGRES=1 already turns a missing database into
# failures; this guards against the PostgreSQL halves being compiled out.
pg_tests=$(cargo test --quiet -p storage --test integration -- --list 2>/dev/null | grep -c '^postgres::.*: test$' || true)
echo "PostgreSQL tests in the storage suite: $pg_tests"
[ "$pg_tests" -ge 15 ] || { echo "the PostgreSQL suite is missing"; exit 1; }
e2e_pg=$(cargo test --quiet -p server --test integration -- --list 2>/dev/null | grep -c '^postgres::.*: test$' || true)
echo "PostgreSQL end-to-end tests: $e2e_pg"
[ "$e2e_pg" -ge 10 ] || { echo "the PostgreSQL end-to-end suite is missing"; exit 1; }

section "done"
