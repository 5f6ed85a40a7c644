# syntax=docker/dockerfile:1
#
# orderflow's image. Four stages:
#   chef     the pinned Rust toolchain plus cargo-chef
#   planner  computes recipe.json: the dependency graph, nothing else
#   builder  cooks (builds) the dependencies from the recipe in their own
#            layer, then builds the workspace. The cook layer is rebuilt only
#            when Cargo.toml/Cargo.lock change, so a source-only change
#            recompiles just our five crates.
#   runtime  Debian slim with the binary, a non-root user, nothing else.
#
# The builder needs the Rust image plus `make` (jemalloc, the server's
# allocator, is built from source): SQLite is bundled, protobuf is
# compiled by protox (no protoc), and the linker is the toolchain's default,
# its bundled rust-lld (.cargo/config.toml says why it sets no linker). `scripts/check-docker-recipe.sh` proves the
# recipe with the same cargo-chef commands where no Docker engine runs.

# The channel in rust-toolchain.toml (scripts/ci.sh checks they agree).
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install --locked cargo-chef@0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Cargo's [env] (LIBSQLITE3_FLAGS) must shape the cooked dependencies too, or
# the build after `COPY . .` compiles SQLite again.
COPY .cargo .cargo
RUN cargo chef cook --release --locked --recipe-path recipe.json --package server --bin orderflow
COPY . .
RUN cargo build --release --locked --package server --bin orderflow

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/orderflow orderflow
COPY --from=builder /app/target/release/orderflow /usr/local/bin/orderflow
USER orderflow
WORKDIR /var/lib/orderflow
# Listen beyond loopback inside the container; JSON logs for collectors.
ENV ORDERFLOW_LISTEN=0.0.0.0:50051 \
    ORDERFLOW_METRICS_LISTEN=0.0.0.0:9464 \
    ORDERFLOW_LOG_FORMAT=json \
    ORDERFLOW_SHUTDOWN_GRACE=20s
EXPOSE 50051 9464
# SIGTERM drains: health NOT_SERVING, in-flight RPCs finish, queued events
# are stored, exit 0. Give `docker stop -t` more than the grace period.
STOPSIGNAL SIGTERM
# `liveness`, not `readiness`: a database outage must not mark every
# container unhealthy (an orchestrator would restart them all). With TLS on,
# add `--ca` naming the CA of the server's certificate.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/orderflow", "health", "--service", "liveness"]
ENTRYPOINT ["/usr/local/bin/orderflow"]
