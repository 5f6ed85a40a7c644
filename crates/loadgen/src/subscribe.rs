//! `--workload subscribe`: subscribers following the stored events
//! (`orderflow_proto::Follow`, resume built in), each from `--after`.
//!
//! Two figures: the events delivered per second (catching up from an old
//! position, it is the read path's throughput), and the lag of each event
//! from its `stored_at` to its arrival (caught up, it is the live tail's
//! commit-to-delivery delay; client and server share this machine's clock).
//!
//! `--lean` decodes only each event's position and `stored_at`, skipping the
//! event itself (prost skips an unknown field without reading it): a
//! client that costs little, to tell the server's limit from the client's
//! when catching up.

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
    /// Decode positions and `stored_at` only (see the module docs).
    pub lean: bool,
    /// The bearer token, for `lean` (a plain channel carries none).
    pub token: Option<String>,
}

/// `EventPage` with only what the figures need.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanPage {
    #[prost(message, repeated, tag = "1")]
    events: Vec<LeanStored>,
}

/// `StoredEvent` without its event (field 2, skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct LeanStored {
    #[prost(uint64, tag = "1")]
    position: u64,
    #[prost(message, optional, tag = "3")]
    stored_at: Option<prost_types::Timestamp>,
}

/// Records each event's lag; returns how many there were.
fn record(
    lag: &mut Histogram<u64>,
    stamps: impl Iterator<Item = Option<prost_types::Timestamp>>,
) -> u64 {
    let now = SystemTime::now();
    let mut n = 0;
    for at in stamps {
        n += 1;
        if let Some(at) = at {
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
    n
}

/// [`follow`] with [`LeanPage`]s, over one subscription (no resume).
async fn follow_lean(
    client: Client,
    config: Config,
    deadline: Instant,
) -> anyhow::Result<Followed> {
    let mut grpc = tonic::client::Grpc::new(client.channel());
    grpc.ready().await.context("the server is not ready")?;
    let mut request = tonic::Request::new(orderflow_proto::proto::SubscribeEventsRequest {
        after_position: config.after,
        actions: config.actions.clone(),
        max_page: config.max_page,
    });
    if let Some(token) = &config.token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("--token is not valid metadata")?,
        );
    }
    let codec = tonic_prost::ProstCodec::<orderflow_proto::proto::SubscribeEventsRequest, LeanPage>::default();
    let mut pages = grpc
        .server_streaming(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/orderflow.v1.EventService/SubscribeEvents",
            ),
            codec,
        )
        .await
        .context("SubscribeEvents failed")?
        .into_inner();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    let (mut events, mut last_position) = (0u64, config.after);
    let limit = config.events_each.unwrap_or(u64::MAX);
    while events < limit {
        let Ok(page) =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), pages.message())
                .await
        else {
            break;
        };
        let Some(page) = page.context("the subscription failed")? else {
            break;
        };
        if let Some(last) = page.events.last() {
            last_position = last.position;
        }
        events += record(&mut lag, page.events.into_iter().map(|e| e.stored_at));
    }
    Ok(Followed {
        events,
        last_position,
        lag,
    })
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
    if config.lean {
        return follow_lean(client, config, deadline).await;
    }
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
        events += record(&mut lag, page.events.into_iter().map(|e| e.stored_at));
    }
    Ok(Followed {
        events,
        last_position: follow.position(),
        lag,
    })
}
