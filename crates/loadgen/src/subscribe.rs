//! `--workload subscribe`: subscribers following the stored events
//! (`orderflow_proto::Follow`, resume built in), each from `--after`.
//!
//! Two figures: the events delivered per second (catching up from an old
//! position, it is the read path's throughput), and the lag of each event
//! from its `stored_at` to its arrival (caught up, it is the live tail's
//! commit-to-delivery delay; client and server share this machine's clock).

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use orderflow_proto::Client;

/// What one run asks for.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where each subscriber starts (0: the oldest event kept).
    pub after: u64,
    /// Events per page asked for (0: the server's default).
    pub max_page: u32,
    /// Only these actions (empty: all).
    pub actions: Vec<String>,
    /// Stop once each subscriber has this many events (else at the
    /// deadline).
    pub events_each: Option<u64>,
}

/// One subscriber's outcome.
pub struct Followed {
    pub events: u64,
    pub last_position: u64,
    /// Microseconds from `stored_at` to arrival, per event.
    pub lag: Histogram<u64>,
}

/// Follows until `deadline` (or `config.events_each` events).
pub async fn follow(client: Client, config: Config, deadline: Instant) -> anyhow::Result<Followed> {
    let mut follow = client
        .follow(config.after)
        .max_page(config.max_page)
        .actions(config.actions.clone());
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    let mut events = 0u64;
    let limit = config.events_each.unwrap_or(u64::MAX);
    while events < limit {
        let Ok(page) =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), follow.next_page())
                .await
        else {
            break;
        };
        let page = page.context("the subscription failed")?;
        let now = SystemTime::now();
        for stored in &page.events {
            if let Some(at) = &stored.stored_at {
                let stored_at = SystemTime::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(at.seconds).unwrap_or(0),
                        u32::try_from(at.nanos).unwrap_or(0),
                    );
                if let Ok(delay) = now.duration_since(stored_at) {
                    lag.saturating_record(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX));
                }
            }
        }
        events += page.events.len() as u64;
    }
    Ok(Followed {
        events,
        last_position: follow.position(),
        lag,
    })
}
