#!/usr/bin/env bash
# Architecture invariants, stated as absences (ARCHITECTURE.md) and checked on
# the real dependency graph (normal and build edges; dev-dependencies are
# test seams and may reach further).
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
forbid() { # forbid CRATE DEP...
    local krate=$1
    shift
    [ -d "crates/$krate" ] || return 0
    local deps
    deps=$(cargo tree --quiet -p "$krate" -e normal,build --prefix none --format '{p}' | cut -d' ' -f1 | sort -u)
    for dep in "$@"; do
        if grep -qx "$dep" <<<"$deps"; then
            echo "architecture: $krate must know nothing of $dep, but depends on it:"
            cargo tree --quiet -p "$krate" -e normal,build -i "$dep" | sed 's/^/    /'
            failed=1
        fi
    done
}

forbid domain diesel diesel-async tonic prost tokio storage transform-engine
forbid transform-engine diesel diesel-async tonic prost
forbid storage tonic prost
# The two large libraries are siblings on `domain`: neither names the
# other, so they compile in parallel; `server` adapts one to the other.
forbid transform-engine storage
forbid storage transform-engine
# The client crate is what users compile: the wire contract and a client,
# no server stack, no database driver.
forbid orderflow-proto domain storage transform-engine grpc-api diesel diesel-async \
    libsqlite3-sys tokio-postgres axum
# The load generator is a client: it reaches the server only through the
# client crate, never through the server's own crates or a database driver.
forbid loadgen domain storage transform-engine grpc-api server diesel diesel-async \
    libsqlite3-sys tokio-postgres
# The engine's log stays I/O-free: a broker's client belongs to the server's
# adapter (server/src/nats_log.rs), not to the engine or the store.
forbid transform-engine async-nats
forbid storage async-nats
# Test support is a dev-dependency only.
for krate in domain storage transform-engine grpc-api server loadgen orderflow-proto; do
    forbid "$krate" test-support
done
# Libraries return typed errors; anyhow is for the binaries only (as a
# direct dependency: proc macros deep in the graph may use it internally).
for library in domain storage transform-engine grpc-api orderflow-proto; do
    if cargo tree --quiet -p "$library" -e normal --depth 1 --prefix none --format '{p}' | cut -d' ' -f1 | grep -qx anyhow; then
        echo "architecture: $library depends on anyhow directly; libraries return thiserror types"
        failed=1
    fi
done
[ "$failed" -eq 0 ] && echo "architecture: all dependency rules hold"
exit "$failed"
