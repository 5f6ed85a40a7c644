//! Generates the messages and clients from the workspace's `proto/` at build
//! time. protox compiles the protobuf files in pure Rust (no system `protoc`,
//! so a fresh machine and the Docker builder need nothing installed);
//! tonic-prost-build turns the descriptors into code. The encoded descriptor
//! set is written out too, for server reflection and for tools.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: [&str; 3] = [
    "orderflow/v1/orders.proto",
    "orderflow/v1/catalog.proto",
    "orderflow/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("orderflow_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // Clients decode responses with prost's codec: a client that cannot
    // decode a response has met a server fault, and INTERNAL is the right
    // code there. The servers live in `grpc-api`, generated with their own
    // codec over these same messages.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
