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
//!
//! Pages are read and encoded once for everyone: [`Feed`] keeps the pages
//! recently read, keyed by where they start and what they filter, and
//! concurrent requests for the same page share one read. A page that starts
//! after position `p` and ends at `last` stays true for ever (no event can
//! appear below a visible one, and the read found none missing), so
//! subscribers following the live tail together (each woken by the same
//! commit, each asking for the page after the same position) cost one read
//! and one encoding between them.

use std::sync::Arc;
use std::time::Duration;

use domain::Action;
use storage::Database;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::encoded::EncodedPage;
use crate::proto::SubscribeEventsRequest;
use crate::status::{self, Reason};
use crate::stored::Stored;

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

/// The bytes of encoded pages [`Feed`] keeps for sharing.
const SHARED_PAGE_BYTES: u64 = 32 << 20;

/// The stream a subscription answers with.
pub type Pages = ReceiverStream<Result<EncodedPage, Status>>;

/// The subscriptions' shared side: the store, and the pages recently read.
#[derive(Clone)]
pub(crate) struct Feed {
    db: Database,
    pages: moka::future::Cache<PageKey, Arc<Page>>,
}

impl Feed {
    pub(crate) fn new(db: Database) -> Self {
        Self {
            db,
            pages: moka::future::Cache::builder()
                .weigher(|_, page: &Arc<Page>| {
                    u32::try_from(page.bytes.bytes().len()).unwrap_or(u32::MAX)
                })
                .max_capacity(SHARED_PAGE_BYTES)
                .build(),
        }
    }
}

/// Which page: after a position, of a size, with a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    after: i64,
    page: u32,
    actions: Arc<[String]>,
}

/// A page read: its encoding, how many events it holds (none if the filter
/// took every row read), the position read up to, and whether a whole page
/// of rows was read (more may be waiting).
#[derive(Debug)]
struct Page {
    bytes: EncodedPage,
    events: usize,
    last: i64,
    full: bool,
    /// The store's signal when the read began: a page read before a later
    /// commit may have missed rows that commit stored.
    tick: u64,
}

/// What a request asks for, validated.
struct Subscription {
    after: i64,
    /// Sorted and without repeats: one key per filter.
    actions: Arc<[String]>,
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
        let mut actions = Vec::with_capacity(request.actions.len());
        for (i, action) in request.actions.into_iter().enumerate() {
            Action::parse(&action).map_err(|e| {
                status::invalid_field(&format!("actions[{i}]"), strip_field(&e.to_string()))
            })?;
            actions.push(action);
        }
        actions.sort_unstable();
        actions.dedup();
        Ok(Self {
            // No position is that high: such a subscription waits, as one
            // past the newest does.
            after: i64::try_from(request.after_position).unwrap_or(i64::MAX),
            actions: actions.into(),
            page,
        })
    }
}

/// Whether a subscription filtering on `actions` (sorted; none takes all)
/// takes an event with `action`.
fn takes(actions: &[String], action: &str) -> bool {
    actions.is_empty() || actions.binary_search_by(|a| a.as_str().cmp(action)).is_ok()
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

/// Starts the subscription `request` asks for over `feed`'s stored events.
/// Bad requests and an expired position are answered before any stream
/// opens.
pub(crate) async fn subscribe(
    feed: Feed,
    request: SubscribeEventsRequest,
) -> Result<Pages, Status> {
    let mut subscription = Subscription::from_wire(request)?;
    let through = feed.db.expired_through().await.map_err(status::storage)?;
    if subscription.after == 0 {
        subscription.after = through;
    } else if subscription.after < through {
        return Err(expired(subscription.after, through));
    }
    let (pages, stream) = mpsc::channel(1);
    tokio::spawn(follow(feed, subscription, pages));
    Ok(ReceiverStream::new(stream))
}

/// Reads and sends pages until the client goes away or the store fails.
async fn follow(
    feed: Feed,
    subscription: Subscription,
    pages: mpsc::Sender<Result<EncodedPage, Status>>,
) {
    // Subscribed before the first read: a commit after that read is a
    // change the wait below sees.
    let mut stored = feed.db.stored_signal().subscribe();
    let mut cursor = subscription.after;
    loop {
        let seen = *stored.borrow_and_update();
        let page = match shared_page(&feed, &subscription, cursor, seen).await {
            Ok(page) => page,
            Err(status) => {
                let _ = pages.send(Err(status)).await;
                return;
            }
        };
        if let Some(page) = &page {
            if page.events > 0 && pages.send(Ok(page.bytes.clone())).await.is_err() {
                return;
            }
            cursor = page.last;
            // More may be stored: a whole page was read, or a shared page
            // was read before a commit this subscription has heard of.
            if page.full || page.tick != seen {
                continue;
            }
        }
        tokio::select! {
            changed = stored.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(POLL) => {}
            () = pages.closed() => return,
        }
    }
}

/// The page after `cursor`, from the shared pages or read now (one read for
/// every subscription asking at once); `None` when nothing is stored after
/// it yet (not kept: rows may come).
async fn shared_page(
    feed: &Feed,
    subscription: &Subscription,
    cursor: i64,
    seen: u64,
) -> Result<Option<Arc<Page>>, Status> {
    let key = PageKey {
        after: cursor,
        page: subscription.page,
        actions: Arc::clone(&subscription.actions),
    };
    if let Some(page) = feed.pages.get(&key).await {
        return Ok(Some(page));
    }
    let read = feed
        .pages
        .try_get_with(key, async {
            match read_page(&feed.db, subscription, cursor, seen).await {
                Ok(Some(page)) => Ok(Arc::new(page)),
                Ok(None) => Err(None),
                Err(status) => Err(Some(status)),
            }
        })
        .await;
    match read {
        Ok(page) => Ok(Some(page)),
        Err(error) => match error.as_ref() {
            None => Ok(None),
            Some(status) => Err(status.clone()),
        },
    }
}

/// What a page read has gathered so far.
#[derive(Default)]
struct Gathered {
    /// The encoded events. A `Vec`: prost writes varints a byte at a time,
    /// and `Vec::push` costs less than `BytesMut::put_u8`.
    bytes: Vec<u8>,
    /// Events encoded (those the filter takes).
    events: usize,
    /// Rows read.
    rows: usize,
    /// The last position read.
    last: Option<i64>,
}

/// Reads the page after `cursor` from the store, encoding each event as it
/// is read; `None` if there is none yet.
async fn read_page(
    db: &Database,
    subscription: &Subscription,
    cursor: i64,
    tick: u64,
) -> Result<Option<Page>, Status> {
    let actions = Arc::clone(&subscription.actions);
    let gathered = db
        .fold_events(
            Some(cursor),
            subscription.page,
            Gathered::default(),
            move |page, row| {
                page.rows += 1;
                page.last = Some(row.position);
                let stored = match Stored::parse(&row.json) {
                    Ok(stored) => stored,
                    Err(error) => {
                        // Stored by this server, so it parsed once; a row
                        // damaged since cannot be sent, and must not stop
                        // every subscriber at its position.
                        tracing::error!(position = row.position, %error, "a stored event does not parse; subscribers skip it");
                        metrics::counter!("orderflow_subscription_unreadable_events_total")
                            .increment(1);
                        return;
                    }
                };
                if !takes(&actions, stored.action()) {
                    return;
                }
                let stored_at = (
                    row.received_at.timestamp(),
                    i32::try_from(row.received_at.timestamp_subsec_nanos()).unwrap_or(0),
                );
                stored.encode_into_page(
                    u64::try_from(row.position).unwrap_or(0),
                    stored_at,
                    &mut page.bytes,
                );
                page.events += 1;
            },
        )
        .await
        .map_err(status::storage)?;
    // Read first, then asked: if retention removed anything above the
    // cursor, this page (or an empty read) may have skipped it.
    let through = db.expired_through().await.map_err(status::storage)?;
    if through > cursor {
        return Err(expired(cursor, through));
    }
    let Some(last) = gathered.last else {
        return Ok(None);
    };
    Ok(Some(Page {
        bytes: EncodedPage::from_encoded(bytes::Bytes::from(gathered.bytes)),
        events: gathered.events,
        last,
        full: gathered.rows >= subscription.page as usize,
        tick,
    }))
}
