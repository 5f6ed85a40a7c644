#!/usr/bin/env bash
# The protobuf guardrails: `buf lint` (buf.yaml: STANDARD with the contract's
# fixed RPC signatures excepted) and `buf breaking` (FILE rules) against a
# base commit: BUF_AGAINST if set, else the previous commit, so each commit
# on main is checked against the one before it. buf installs from PyPI
# (`pip install buf-bin`).
set -euo pipefail
cd "$(dirname "$0")/.."

buf lint
echo "buf lint: clean"

base=${BUF_AGAINST:-}
if [ -z "$base" ]; then
    if ! base=$(git rev-parse --verify --quiet HEAD~1); then
        echo "buf breaking: no previous commit to compare with (a shallow clone needs fetch-depth 2)" >&2
        exit 1
    fi
fi
# `subdir=proto`: the base is read as a plain module rooted at proto/, so
# it compares even where buf.yaml did not exist yet.
buf breaking --against ".git#ref=$base,subdir=proto"
echo "buf breaking: no breaking change since $(git rev-parse --short "$base")"
