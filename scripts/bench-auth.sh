#!/usr/bin/env bash
# What least privilege costs a cached GetOrder: scripts/bench-hit.sh's
# h2load GetOrder-to-Health ratio on one release build, in alternating
# rounds of three configurations:
#   off    no credentials (GetOrder needs none);
#   token  a credentials file; every request sends a principal's token
#          (SHA-256 and a constant-time compare per call, a scope check);
#   jwt    the same, plus a JWK set; every request sends one JWT (its
#          signature checked once, then the token is a cache hit).
# Health needs no credential in any of them, so each ratio carries the
# auth cost of GetOrder alone. Prints each run's ratios, then per stream
# count the medians and `token/off` and `jwt/off` (target >= 0.9), and
# how many JWT signatures the server checked in each jwt run.
#
# Usage: scripts/bench-auth.sh [REQUESTS] [ROUNDS] [BENCH_HIT_ROUNDS]
#        (defaults 20000, 3, 3: about six minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20000}
rounds=${2:-3}
inner=${3:-3}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --quiet --release -p server -p loadgen --bins --example jwt
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# A token and its hash, as the README mints them.
token="ofk_$(openssl rand -hex 24)"
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$scratch/credentials.toml" <<TOML
[[principals]]
name = "bench"
token_sha256 = "$hash"
scopes = ["orders:read", "orders:write"]
TOML
key=crates/test-support/keys/rsa-a.pem
target/release/examples/jwt jwks "$key" bench-key >"$scratch/jwks.json"
jwt=$(target/release/examples/jwt token "$key" bench-key bench-jwt "orders:read orders:write" \
    https://issuer.bench orderflow 86400)
credentials=("ORDERFLOW_CREDENTIALS=$scratch/credentials.toml")
jwks=("ORDERFLOW_JWT_JWKS=$scratch/jwks.json" ORDERFLOW_JWT_ISSUER=https://issuer.bench
    ORDERFLOW_JWT_AUDIENCE=orderflow)

run() { # NAME [ENV=VALUE...]
    local name=$1
    shift
    SKIP_BUILD=1 scripts/bench-hit.sh "$requests" "$inner" "$@" >"$scratch/out" || {
        cat "$scratch/out" >&2
        exit 1
    }
    awk -v n="$name" '$1 == "ratio" { print n "\t" $2 "\t" $3 } $1 == "jwt_verifications" { print n "\tverified\t" $2 }' "$scratch/out"
}
for round in $(seq 1 "$rounds"); do
    run off
    BEARER=$token run token "${credentials[@]}"
    BEARER=$jwt run jwt "${credentials[@]}" "${jwks[@]}"
    echo "round $round done" >&2
done | tee "$scratch/ratios.tsv"
python3 - "$scratch/ratios.tsv" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
for streams in ("16", "64"):
    med = {n: statistics.median(float(r[2]) for r in rows if r[0] == n and r[1] == streams)
           for n in ("off", "token", "jwt")}
    print(f"streams {streams}: GetOrder/Health off {med['off']:.2f}, token {med['token']:.2f}, "
          f"jwt {med['jwt']:.2f}; token/off {med['token'] / med['off']:.2f}, "
          f"jwt/off {med['jwt'] / med['off']:.2f}")
verified = [r[2] for r in rows if r[0] == "jwt" and r[1] == "verified"]
print(f"JWT signatures checked per jwt run (seeding and every GetOrder included): {' '.join(verified)}")
PY
