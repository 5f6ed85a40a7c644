//! Generates the gRPC servers from `proto/` at build time, over the
//! messages `orderflow-proto` generates from the same files. protox compiles
//! the protobuf files in pure Rust (no system `protoc`), tonic-prost-build
//! writes the servers.

use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "orderflow/v1/orders.proto",
    "orderflow/v1/catalog.proto",
    "orderflow/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(PROTOS, [&root])?;
    // The servers decode requests with `crate::codec::RequestCodec`, which
    // answers INVALID_ARGUMENT for a body that is not valid protobuf
    // (tonic-prost's own codec says INTERNAL). They name the client crate's
    // messages, so a message type exists once. The exceptions: the `Order`
    // they answer with is `crate::encoded::EncodedOrder`, the same bytes,
    // encoded once per cached snapshot, and the `EventPage`
    // `crate::encoded::EncodedPage`, encoded once for every subscriber; the `Event` and `EventBatch` they
    // take are `crate::wire`'s, which read the attributes map as its
    // entries instead of hashing them into a `HashMap`.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::RequestCodec")
        .extern_path(".orderflow.v1.Order", "crate::encoded::EncodedOrder")
        .extern_path(".orderflow.v1.EventPage", "crate::encoded::EncodedPage")
        .extern_path(".orderflow.v1.Event", "crate::wire::Event")
        .extern_path(".orderflow.v1.EventBatch", "crate::wire::EventBatch")
        .extern_path(".orderflow.v1", "::orderflow_proto::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
