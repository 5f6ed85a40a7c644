//! orderflow's wire contract for Rust clients: the generated `orderflow.v1`
//! messages and clients ([`proto`]), a connected [`Client`] that adds the
//! bearer token, and the machine-readable [`Reason`] every error carries.
//!
//! This crate knows nothing of the server: its dependency tree has tonic and
//! prost, no database driver.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use orderflow_proto::{Client, Reason, proto::GetOrderRequest};
//!
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .bearer_token("secret")
//!     .connect()
//!     .await?;
//! let request = GetOrderRequest { order_id: "0190f0e4-0000-7000-8000-000000000001".into() };
//! match client.orders().get_order(request).await {
//!     Ok(order) => println!("{:?}", order.into_inner()),
//!     Err(status) if orderflow_proto::reason(&status) == Some(Reason::NotFound) => {
//!         println!("no such order")
//!     }
//!     Err(status) => return Err(status.into()),
//! }
//! # Ok(())
//! # }
//! ```

/// Generated from the workspace's `proto/orderflow/v1/*.proto`: messages and
/// clients.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
    tonic::include_proto!("orderflow.v1");

    /// The encoded descriptor set of `orderflow.v1`, for server reflection
    /// and tools.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("orderflow_descriptor");
}

mod client;
mod follow;
mod reason;

pub use client::{
    Authenticated, CatalogClient, Client, ClientBuilder, ClientError, EventClient, OrderClient,
};
pub use follow::Follow;
pub use reason::{DOMAIN, Reason, details, expected_sequence, oldest_position, reason};
/// The standard error details, to read what [`details`] returns.
pub use tonic_types;
