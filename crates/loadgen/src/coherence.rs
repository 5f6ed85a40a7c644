//! `--workload coherence`: how long a write through one replica takes to
//! be read through the others.
//!
//! For each write: every reader first reads the order (twice, so its cache
//! holds the current version), then `--target` updates its status; from the
//! acknowledgement, each reader polls GetOrder back to back until it
//! returns the new version. The delay per reader and write goes into one
//! histogram; a reader that never catches up within `--bound` fails the
//! run. Orders walk PENDING → PAID → SHIPPED → DELIVERED (three writes
//! each), then a new order is created.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use orderflow_proto::proto::{
    CreateOrderRequest, GetOrderRequest, OrderLine, OrderStatus, UpdateOrderStatusRequest,
};
use orderflow_proto::{Client, OrderClient};

/// The figures of one run.
pub struct Report {
    /// Writes made.
    pub writes: u64,
    /// Per reader and write: acknowledgement to the new version, in µs.
    pub delays: Histogram<u64>,
    /// A GetOrder round trip on a reader, in µs (the polling granularity).
    pub read_round_trip: Histogram<u64>,
}

async fn version(client: &mut OrderClient, id: &str) -> anyhow::Result<u64> {
    Ok(client
        .get_order(GetOrderRequest {
            order_id: id.to_owned(),
        })
        .await
        .context("GetOrder on a reader")?
        .into_inner()
        .version)
}

/// Runs `writes` writes through `writer`, measured on `readers`.
pub async fn run(
    writer: &Client,
    readers: &[Client],
    writes: u64,
    bound: Duration,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!readers.is_empty(), "--read-targets names no replica");
    let mut delays = Histogram::<u64>::new(3)?;
    let mut read_round_trip = Histogram::<u64>::new(3)?;
    let mut writer = writer.orders();
    let mut readers: Vec<OrderClient> = readers.iter().map(Client::orders).collect();
    let mut done = 0u64;
    let mut n = 0u64;
    while done < writes {
        n += 1;
        let order = writer
            .create_order(CreateOrderRequest {
                user_id: format!("coherence-{n}"),
                lines: vec![OrderLine {
                    product_id: "p-1".into(),
                    quantity: 1,
                    unit_price_cents: 100,
                }],
                currency: "EUR".into(),
                idempotency_key: String::new(),
            })
            .await
            .context("CreateOrder on --target")?
            .into_inner();
        let mut current = order.version;
        for status in [
            OrderStatus::Paid,
            OrderStatus::Shipped,
            OrderStatus::Delivered,
        ] {
            if done >= writes {
                break;
            }
            for reader in &mut readers {
                // Until it has the current version cached (a miss, then a hit).
                while version(reader, &order.order_id).await? < current {}
                let started = Instant::now();
                version(reader, &order.order_id).await?;
                read_round_trip.record(micros(started.elapsed()))?;
            }
            let updated = writer
                .update_order_status(UpdateOrderStatusRequest {
                    order_id: order.order_id.clone(),
                    status: status.into(),
                    expected_version: current,
                })
                .await
                .context("UpdateOrderStatus on --target")?
                .into_inner();
            let acknowledged = Instant::now();
            current = updated.version;
            for reader in &mut readers {
                loop {
                    let seen = version(reader, &order.order_id).await?;
                    if seen >= current {
                        delays.record(micros(acknowledged.elapsed()))?;
                        break;
                    }
                    anyhow::ensure!(
                        acknowledged.elapsed() < bound,
                        "a reader still had version {seen} of {} {bound:?} after version {current} was acknowledged",
                        order.order_id
                    );
                }
            }
            done += 1;
        }
    }
    Ok(Report {
        writes: done,
        delays,
        read_round_trip,
    })
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
