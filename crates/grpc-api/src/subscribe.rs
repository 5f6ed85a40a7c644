//! SubscribeEvents: the stored events after a position, in position order,
//! then live.
//!
//! One task per subscription reads pages from the store and sends them into
//! a channel of one page: a slow reader holds at most that page and what
//! HTTP/2 flow control lets through, and the rest stays in the store. Once
//! caught up the task waits for the store's [`storage::StoredSignal`] (or a
//! poll, should a wake-up be lost), and ends when the client goes away.
//! Positions are complete because the store hands them out in commit order
//! (`storage`'s feed module); retention is checked after every page read, so
//! a subscriber that falls behind it is told, never silently skipped ahead.

use std::collections::HashSet;
use std::time::Duration;

use domain::{Action, Event};
use storage::{Database, EventStore as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::convert;
use crate::proto::{EventPage, StoredEvent, SubscribeEventsRequest};
use crate::status::{self, Reason};

/// Events per page when the request says 0.
pub const DEFAULT_PAGE: u32 = 500;
/// The largest `max_page` accepted.
pub const MAX_PAGE: u32 = 10_000;
/// The most `actions` one subscription may name.
pub const MAX_ACTIONS: usize = 64;
/// How long a caught-up subscription waits without a wake-up before it
/// looks at the store anyway (a notification lost with a broken change
/// feed); well within the contract's 1 s.
const POLL: Duration = Duration::from_millis(500);

/// The stream a subscription answers with.
pub type Pages = ReceiverStream<Result<EventPage, Status>>;

/// What a request asks for, validated.
struct Subscription {
    after: i64,
    actions: HashSet<String>,
    page: u32,
}

impl Subscription {
    fn from_wire(request: SubscribeEventsRequest) -> Result<Self, Status> {
        let page = match request.max_page {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(status::invalid_field(
                    "max_page",
                    format!("{n} is over the limit of {MAX_PAGE}"),
                ));
            }
            n => n,
        };
        if request.actions.len() > MAX_ACTIONS {
            return Err(status::invalid_field(
                "actions",
                format!(
                    "{} actions named, at most {MAX_ACTIONS} are accepted",
                    request.actions.len()
                ),
            ));
        }
        let mut actions = HashSet::with_capacity(request.actions.len());
        for (i, action) in request.actions.into_iter().enumerate() {
            Action::parse(&action).map_err(|e| {
                status::invalid_field(&format!("actions[{i}]"), strip_field(&e.to_string()))
            })?;
            actions.insert(action);
        }
        Ok(Self {
            // No position is that high: such a subscription waits, as one
            // past the newest does.
            after: i64::try_from(request.after_position).unwrap_or(i64::MAX),
            actions,
            page,
        })
    }

    fn wants(&self, event: &Event) -> bool {
        self.actions.is_empty() || self.actions.contains(event.action.as_str())
    }
}

/// `"invalid action: why"` as `"why"`: the caller names the field.
fn strip_field(message: &str) -> &str {
    message
        .split_once(": ")
        .map_or(message, |(_, reason)| reason)
}

/// POSITION_EXPIRED for a subscriber at `after` when retention removed
/// everything up to `through`.
fn expired(after: i64, through: i64) -> Status {
    status::error(
        Reason::PositionExpired,
        format!(
            "position {after} has expired: retention removed every event up to {through}; \
             the oldest still stored is after {through}"
        ),
    )
    .meta("oldest_position", through.saturating_add(1))
    .status()
}

/// Starts the subscription `request` asks for over `db`'s stored events.
/// Bad requests and an expired position are answered before any stream
/// opens.
pub(crate) async fn subscribe(
    db: Database,
    request: SubscribeEventsRequest,
) -> Result<Pages, Status> {
    let mut subscription = Subscription::from_wire(request)?;
    let through = db.expired_through().await.map_err(status::storage)?;
    if subscription.after == 0 {
        subscription.after = through;
    } else if subscription.after < through {
        return Err(expired(subscription.after, through));
    }
    let (pages, stream) = mpsc::channel(1);
    tokio::spawn(follow(db, subscription, pages));
    Ok(ReceiverStream::new(stream))
}

/// Reads and sends pages until the client goes away or the store fails.
async fn follow(
    db: Database,
    subscription: Subscription,
    pages: mpsc::Sender<Result<EventPage, Status>>,
) {
    // Subscribed before the first read: a commit after that read is a
    // change the wait below sees.
    let mut stored = db.stored_signal().subscribe();
    let mut cursor = subscription.after;
    loop {
        stored.borrow_and_update();
        let read = next_page(&db, &subscription, cursor).await;
        let (page, last, full) = match read {
            Ok(read) => read,
            Err(status) => {
                let _ = pages.send(Err(status)).await;
                return;
            }
        };
        if !page.events.is_empty() && pages.send(Ok(page)).await.is_err() {
            return;
        }
        cursor = last;
        if full {
            continue;
        }
        tokio::select! {
            changed = stored.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(POLL) => {}
            () = pages.closed() => return,
        }
    }
}

/// The page after `cursor`: the events `subscription` wants (perhaps
/// none, if it filters every one read), the position read up to, and
/// whether a whole page was read (more may be waiting).
async fn next_page(
    db: &Database,
    subscription: &Subscription,
    cursor: i64,
) -> Result<(EventPage, i64, bool), Status> {
    let rows = db
        .read_events(Some(cursor), subscription.page)
        .await
        .map_err(status::storage)?;
    // Read first, then asked: if retention removed anything above the
    // cursor, this page (or an empty read) may have skipped it.
    let through = db.expired_through().await.map_err(status::storage)?;
    if through > cursor {
        return Err(expired(cursor, through));
    }
    let Some(last) = rows.last().map(|row| row.position) else {
        return Ok((EventPage::default(), cursor, false));
    };
    let full = rows.len() >= subscription.page as usize;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let event = match Event::from_json(&row.json) {
            Ok(event) => event,
            Err(error) => {
                // Stored by this server, so it parsed once; a row damaged
                // since cannot be sent, and must not stop every subscriber
                // at its position.
                tracing::error!(position = row.position, %error, "a stored event does not parse; subscribers skip it");
                metrics::counter!("orderflow_subscription_unreadable_events_total").increment(1);
                continue;
            }
        };
        if !subscription.wants(&event) {
            continue;
        }
        events.push(StoredEvent {
            position: u64::try_from(row.position).unwrap_or(0),
            event: Some(convert::event_to_wire(&event)),
            stored_at: Some(convert::stored_at_to_wire(row.received_at)),
        });
    }
    Ok((EventPage { events }, last, full))
}
