#!/usr/bin/env bash
# Proves the Dockerfile's build recipe without a Docker engine, with the same
# cargo-chef commands its stages run, in scratch directories:
#   1. planner: `cargo chef prepare` on the full source tree;
#   2. builder: `cargo chef cook --release` from recipe.json alone (the
#      dependency layer), then the full sources and the release build;
#   3. a source-only change (a crate's source, not Cargo.toml/lock) rebuilds
#      only workspace crates: no dependency is compiled again;
#   4. the binary the runtime stage copies (target/release/orderflow) exists
#      and runs.
# Release builds of every dependency take ~10 minutes on 2 cores, so CI does
# not run this on every push; run it when the Dockerfile, Cargo.toml or the
# toolchain changes (the GitHub workflow's docker job builds the real image).
#
# Usage: scripts/check-docker-recipe.sh [SCRATCH_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scratch=${1:-$root/target/docker-recipe}
command -v cargo-chef >/dev/null || { echo "install cargo-chef: cargo install --locked cargo-chef"; exit 1; }
rm -rf "$scratch/planner" "$scratch/builder"
mkdir -p "$scratch/planner" "$scratch/builder"
export CARGO_TARGET_DIR="$scratch/target"

copy_sources() { # what `COPY . .` copies: the tracked files (.dockerignore drops the rest)
    git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$1"
}

echo "== planner: cargo chef prepare"
copy_sources "$scratch/planner"
(cd "$scratch/planner" && cargo chef prepare --recipe-path recipe.json)

echo "== builder: cargo chef cook --release (dependencies only, from recipe.json)"
cp "$scratch/planner/recipe.json" "$scratch/builder/"
cp -r "$scratch/planner/.cargo" "$scratch/builder/" # the Dockerfile's `COPY .cargo .cargo`
(cd "$scratch/builder" && cargo chef cook --release --locked --recipe-path recipe.json --package server --bin orderflow)

echo "== builder: full sources, release build"
copy_sources "$scratch/builder"
log=$(mktemp)
(cd "$scratch/builder" && cargo build --release --locked --package server --bin orderflow 2>&1 | tee "$log")
# Every crate under crates/ is a workspace crate (the folder name is the
# package name), so the list cannot fall behind a new crate.
workspace="^($(ls crates | paste -sd'|'))$"
compiled() { sed -n 's/^ *Compiling \([^ ]*\) v.*/\1/p' "$1" | sort -u; }
rebuilt_deps=$(compiled "$log" | grep -Ev "$workspace" || true)
if [ -n "$rebuilt_deps" ]; then
    echo "FAIL: the build after cook recompiled dependencies (the cook layer would be useless):"
    echo "$rebuilt_deps"
    exit 1
fi
echo "after cook, compiled only: $(compiled "$log" | tr '\n' ' ')"

echo "== a source-only change"
echo "// recipe check $(date +%s)" >>"$scratch/builder/crates/domain/src/lib.rs"
(cd "$scratch/builder" && cargo build --release --locked --package server --bin orderflow 2>&1 | tee "$log")
rebuilt_deps=$(compiled "$log" | grep -Ev "$workspace" || true)
if [ -n "$rebuilt_deps" ]; then
    echo "FAIL: a source-only change recompiled dependencies:"
    echo "$rebuilt_deps"
    exit 1
fi
echo "after a source change, compiled only: $(compiled "$log" | tr '\n' ' ')"

echo "== the binary the runtime stage copies"
binary="$CARGO_TARGET_DIR/release/orderflow"
"$binary" --version
echo "OK: recipe verified; cooked dependencies were reused; $binary runs"
