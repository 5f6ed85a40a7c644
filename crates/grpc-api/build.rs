//! Generates the gRPC code from `proto/` at build time. protox compiles the
//! protobuf files in pure Rust (no system `protoc`, so a fresh machine and the
//! Docker builder need nothing installed); tonic-prost-build turns the
//! descriptors into messages, clients and servers. The encoded descriptor
//! set is also written out for server reflection.

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
    // Messages and servers: the servers decode requests with
    // `crate::codec::RequestCodec`, which answers INVALID_ARGUMENT for a body
    // that is not valid protobuf (tonic-prost's own codec says INTERNAL).
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::RequestCodec")
        .compile_fds(descriptors.clone())?;
    // Clients, apart, with prost's codec: a client that cannot decode a
    // response has met a server fault, and INTERNAL is the right code there.
    // They name the messages generated above.
    let clients = out.join("clients");
    std::fs::create_dir_all(&clients)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".orderflow.v1", "crate::proto")
        .out_dir(&clients)
        .compile_fds(descriptors)?;
    Ok(())
}
