#!/usr/bin/env bash
# The static checks CI runs, in order; `.ci/run` (this machine) and the
# GitHub workflow both call this, then the README's test command
# (scripts/test.sh) and scripts/check-postgres-suites.sh, so a person runs
# exactly what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

section "toolchain pinned once (rust-toolchain.toml)"
pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
drift=0
grep -q "^ARG RUST_VERSION=$pinned\$" Dockerfile || { echo "Dockerfile RUST_VERSION is not $pinned"; drift=1; }
grep -q "toolchain: \"$pinned\"" .github/workflows/ci.yml || { echo ".github/workflows/ci.yml toolchain is not $pinned"; drift=1; }
grep -q "^rust-version = \"${pinned%.*}\"\$" Cargo.toml || { echo "Cargo.toml rust-version is not ${pinned%.*}"; drift=1; }
[ "$drift" -eq 0 ] && echo "toolchain $pinned everywhere"
[ "$drift" -eq 0 ]

section "fmt"
cargo fmt --all -- --check

section "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

section "check-unwrap"
scripts/check-unwrap.sh

section "lints bite"
scripts/check-lints-bite.sh

section "unused dependencies (cargo machete)"
cargo machete

section "architecture"
scripts/check-architecture.sh

section "protobuf (buf lint, buf breaking)"
scripts/check-proto.sh

section "deploy kit (compose schema, Kubernetes schemas, shutdown budget)"
scripts/check-deploy.sh

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

section "done (static checks; now run scripts/test.sh and scripts/check-postgres-suites.sh)"
