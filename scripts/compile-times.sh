#!/usr/bin/env bash
# Measures the compile-time figures we track (lesson 4) and prints a Markdown
# table for docs/compile-times.md:
#   1. clean debug build of the workspace (all targets), in a scratch target dir
#      so the shared `target/` is never cleaned;
#   2. incremental rebuild after touching the leaf crate (`server` once it
#      exists) and after touching `domain` (everything depends on it);
#   3. rebuild-and-link of the biggest binary with the toolchain's bundled
#      rust-lld (our default, see .cargo/config.toml) versus the system linker
#      (`-C linker-features=-lld`, in its own target dir because RUSTFLAGS
#      changes invalidate every cached artifact).
#
# Usage: scripts/compile-times.sh            (takes several minutes on 2 cores)
# Env:   KEEP=1 reuses the scratch target dirs (skips nothing, just no rm).
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=target/compile-times
scratch_bfd=target/compile-times-bfd
[ "${KEEP:-0}" = 1 ] || rm -rf "$scratch" "$scratch_bfd"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
timed() { # timed TARGET_DIR RUSTFLAGS cargo-args... ; prints seconds
    local dir=$1 flags=$2
    shift 2
    local start
    start=$(now)
    CARGO_TARGET_DIR=$dir RUSTFLAGS=$flags cargo build --quiet "$@" >&2
    secs "$start" "$(now)"
}

# The leaf: the binary crate once it exists; until then the only crate.
if [ -d crates/server ]; then
    leaf=server
    big=(-p server --bin orderflow)
else
    leaf=domain
    big=(-p domain --test integration)
fi
leaf_root=crates/$leaf/src/lib.rs
[ -f "crates/$leaf/src/main.rs" ] && leaf_root=crates/$leaf/src/main.rs

# An "edit" appends a new public item (a plain `touch` lets incremental
# compilation skip nearly everything, which no real edit does); the files are
# restored on exit.
backup=$(mktemp -d)
cp "$leaf_root" "$backup/leaf.rs"
cp crates/domain/src/lib.rs "$backup/domain.rs"
restore() {
    cp "$backup/leaf.rs" "$leaf_root"
    cp "$backup/domain.rs" crates/domain/src/lib.rs
    rm -rf "$backup"
}
trap restore EXIT
edits=0
edit() {
    edits=$((edits + 1))
    printf '\n#[doc(hidden)]\n#[allow(dead_code, reason = "compile-time probe")]\npub fn compile_time_probe_%s() {}\n' "$edits" >>"$1"
}

echo "measuring clean build..." >&2
clean=$(timed "$scratch" "" --workspace --all-targets)
edit "$leaf_root"
leaf_incr=$(timed "$scratch" "" --workspace --all-targets)
edit crates/domain/src/lib.rs
domain_incr=$(timed "$scratch" "" --workspace --all-targets)

echo "measuring linkers..." >&2
# Warm both dirs for the biggest binary, then time the same edit rebuilt by
# each (one crate's codegen + the link); the difference between the two rows
# is the difference in link time.
timed "$scratch" "" "${big[@]}" >/dev/null
timed "$scratch_bfd" "-C linker-features=-lld" "${big[@]}" >/dev/null
edit "$leaf_root"
link_lld=$(timed "$scratch" "" "${big[@]}")
link_bfd=$(timed "$scratch_bfd" "-C linker-features=-lld" "${big[@]}")

cat <<TABLE
Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(rustc --version | cut -d' ' -f1-2), debug profile.

| figure | seconds |
|---|---|
| clean build, \`cargo build --workspace --all-targets\` | $clean |
| incremental after editing \`$leaf\` | $leaf_incr |
| incremental after editing \`domain\` | $domain_incr |
| rebuild + link \`${big[*]}\`, rust-lld (default) | $link_lld |
| rebuild + link \`${big[*]}\`, system \`cc\`/ld.bfd | $link_bfd |
TABLE
