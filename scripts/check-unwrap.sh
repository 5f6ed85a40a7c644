#!/usr/bin/env bash
# CI entry point for "no unwrap/expect/panic outside tests" (lesson 5).
#
# Exact by construction: clippy checks only non-test targets here (`--lib
# --bins --examples`; `#[cfg(test)]` code is not even compiled), so test
# modules and comments cannot cause false hits and nothing inside a test module
# can hide a real one, unlike a grep. The workspace lints already deny these;
# naming them again keeps this script meaningful if someone relaxes them.
#
# Usage: scripts/check-unwrap.sh [--manifest-path PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo clippy --workspace --lib --bins --examples --quiet "$@" -- \
    -D clippy::unwrap_used -D clippy::expect_used -D clippy::panic \
    -D clippy::todo -D clippy::unimplemented -D clippy::indexing_slicing
echo "check-unwrap: no unwrap/expect/panic/indexing in non-test code"
