#!/usr/bin/env bash
# Fails if the PostgreSQL halves of the test suites were compiled out or
# renamed. (ORDERFLOW_REQUIRE_POSTGRES=1 already turns a missing database
# into test failures; this guards the other way of not running them.)
#
# Lists the integration binaries `scripts/test.sh` built (same packages, same
# features: nothing is compiled again) rather than `cargo test -p <crate>`,
# whose narrower feature set would rebuild each crate.
set -euo pipefail
cd "$(dirname "$0")/.."

binaries=$(cargo test --workspace --test integration --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["kind"] == ["test"]:
        print(message["target"]["src_path"].split("/crates/")[1].split("/")[0], message["executable"])
')

count() { # CRATE -> PostgreSQL tests its integration binary lists
    local binary
    binary=$(awk -v c="$1" '$1 == c { print $2 }' <<<"$binaries")
    [ -n "$binary" ] || { echo 0; return; }
    "$binary" --list 2>/dev/null | grep -c '^postgres::.*: test$' || true
}

check() { # CRATE LABEL MINIMUM
    local n
    n=$(count "$1")
    echo "PostgreSQL $2: $n"
    [ "$n" -ge "$3" ] || { echo "the PostgreSQL $2 are missing"; exit 1; }
}

check storage "tests in the storage suite" 15
check grpc-api "in-process RPC tests" 9
check server "end-to-end tests" 7
