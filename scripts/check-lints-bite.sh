#!/usr/bin/env bash
# Proves the workspace lints bite: builds a scratch copy of this workspace's
# lint setup (root Cargo.toml + clippy.toml) with one canary crate holding one
# offending sample per lint, and requires clippy to reject every sample, and
# scripts/check-unwrap.sh to fail on it. Cheap (no dependencies), so CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/crates/canary/src" "$scratch/scripts"
# Same [workspace.lints], profiles and clippy.toml; members limited to the canary.
sed 's/^members = .*/members = ["crates\/canary"]/' Cargo.toml >"$scratch/Cargo.toml"
cp clippy.toml "$scratch/"
cp scripts/check-unwrap.sh "$scratch/scripts/"
cat >"$scratch/crates/canary/Cargo.toml" <<'TOML'
[package]
name = "canary"
version.workspace = true
edition.workspace = true
publish.workspace = true

[lints]
workspace = true
TOML
cat >"$scratch/crates/canary/src/lib.rs" <<'RUST'
//! One sample per denied lint; each must be rejected.
use std::cell::RefCell;
use std::sync::Mutex;

pub async fn await_holding_lock(m: &Mutex<u32>) {
    let guard = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    std::future::ready(()).await;
    drop(guard);
}
pub async fn await_holding_refcell_ref(c: &RefCell<u32>) {
    let b = c.borrow_mut();
    std::future::ready(()).await;
    drop(b);
}
pub fn unwrap_used(x: Option<u32>) -> u32 { x.unwrap() }
pub fn expect_used(x: Option<u32>) -> u32 { x.expect("x") }
pub fn panic() { panic!("boom") }
pub fn todo() { todo!() }
pub fn unimplemented() { unimplemented!() }
pub fn dbg_macro(x: u32) -> u32 { dbg!(x) }
pub fn indexing_slicing(v: &[u32]) -> u32 { v[0] }
pub fn unsafe_code(p: *const u32) -> u32 { unsafe { *p } }
RUST

export CARGO_TARGET_DIR="$root/target/lint-canary"
out=$(cd "$scratch" && cargo clippy --quiet --message-format json 2>/dev/null || true)
failed=0
for lint in clippy::await_holding_lock clippy::await_holding_refcell_ref clippy::unwrap_used \
    clippy::expect_used clippy::panic clippy::todo clippy::unimplemented clippy::dbg_macro \
    clippy::indexing_slicing unsafe_code; do
    if grep -q "\"code\":\"$lint\"" <<<"$out"; then
        echo "bites: $lint"
    else
        echo "DOES NOT BITE: $lint"
        failed=1
    fi
done
if (cd "$scratch" && scripts/check-unwrap.sh >/dev/null 2>&1); then
    echo "DOES NOT BITE: scripts/check-unwrap.sh passed a planted unwrap"
    failed=1
else
    echo "bites: scripts/check-unwrap.sh"
fi
if [ "$failed" -ne 0 ]; then
    echo "clippy said:"
    grep -o '"rendered":"[^"]*' <<<"$out" | sed 's/"rendered":"//' | head -40
    exit 1
fi
