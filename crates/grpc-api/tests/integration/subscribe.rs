//! SubscribeEvents over gRPC: the store's events in position order, then
//! live; resumable from any position; filtered by action; bad requests and
//! expired positions refused with their reason; never a silent skip.

use std::time::Duration;

use domain::{Event, EventId, WriteId};
use grpc_api::proto::{EventPage, SubscribeEventsRequest};
use orderflow_proto::Reason;
use storage::{Database, EventStore as _};
use test_support::{LEGACY_EVENTS as LEGACY, TestDb};
use tonic::{Code, Request, Streaming};

use crate::details::reason;
use crate::support::InProcess;

/// `n` events tagged `tag`, with `action`.
fn events(tag: &str, action: &str, n: usize) -> Vec<Event> {
    let template = Event::from_json(LEGACY.lines().next().unwrap()).unwrap();
    (0..n)
        .map(|i| {
            let mut event = template.clone();
            event.event_id = Some(EventId::parse(format!("{tag}-{i}")).unwrap());
            event.action = domain::Action::parse(action).unwrap();
            event
        })
        .collect()
}

async fn store(db: &Database, events: &[Event]) {
    db.append_events(WriteId::generate(), events).await.unwrap();
}

async fn stored_positions(db: &Database) -> Vec<u64> {
    db.read_events(None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| u64::try_from(e.position).unwrap())
        .collect()
}

fn request(after: u64, max_page: u32, actions: &[&str]) -> SubscribeEventsRequest {
    SubscribeEventsRequest {
        after_position: after,
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        max_page,
    }
}

/// The next page, within `wait`.
async fn next_page(stream: &mut Streaming<EventPage>, wait: Duration) -> EventPage {
    tokio::time::timeout(wait, stream.message())
        .await
        .expect("a page in time")
        .unwrap()
        .expect("the stream goes on")
}

/// Reads pages until `n` events arrived; their positions.
async fn read_events(stream: &mut Streaming<EventPage>, n: usize, max_page: usize) -> Vec<u64> {
    let mut positions = Vec::new();
    while positions.len() < n {
        let page = next_page(stream, Duration::from_secs(5)).await;
        assert!(!page.events.is_empty(), "no empty page is sent");
        assert!(
            page.events.len() <= max_page,
            "{} > {max_page}",
            page.events.len()
        );
        positions.extend(page.events.iter().map(|e| e.position));
    }
    positions
}

/// What is stored comes in position order, in pages of at most
/// `max_page`; what is stored later arrives live; a new call from the last
/// position seen goes on with no gap and no repeat.
pub async fn subscriptions_read_the_store_then_follow_it_live(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let store_db = Database::open(db.config());
    store(&store_db, &events("early", "login", 25)).await;
    let mut client = server.events().await;
    let mut stream = client
        .subscribe_events(request(0, 10, &[]))
        .await
        .unwrap()
        .into_inner();
    let first = read_events(&mut stream, 25, 10).await;
    assert_eq!(first, stored_positions(&store_db).await);

    store(&store_db, &events("live", "login", 3)).await;
    let live = read_events(&mut stream, 3, 10).await;
    let all = stored_positions(&store_db).await;
    assert_eq!([first.clone(), live.clone()].concat(), all);

    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "a caught-up subscription waits, and repeats nothing"
    );

    let mut resumed = client
        .subscribe_events(request(all[19], 0, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read_events(&mut resumed, 8, 500).await, all[20..]);
}

/// Only the actions named, and every one of them.
pub async fn subscriptions_filter_by_action(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let store_db = Database::open(db.config());
    for round in 0..3 {
        store(&store_db, &events(&format!("l{round}"), "login", 7)).await;
        store(&store_db, &events(&format!("p{round}"), "purchase", 2)).await;
        store(&store_db, &events(&format!("x{round}"), "x.custom", 1)).await;
    }
    let mut stream = server
        .events()
        .await
        .subscribe_events(request(0, 4, &["purchase", "x.custom"]))
        .await
        .unwrap()
        .into_inner();
    let mut actions = Vec::new();
    while actions.len() < 9 {
        let page = next_page(&mut stream, Duration::from_secs(5)).await;
        actions.extend(page.events.into_iter().map(|e| e.event.unwrap().action));
    }
    assert_eq!(
        actions,
        ["purchase", "purchase", "x.custom"].repeat(3),
        "the named actions, in position order"
    );
}

/// Each bad field is INVALID_ARGUMENT naming it; no stream opens.
pub async fn bad_subscriptions_are_invalid_argument_naming_the_field(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let mut client = server.events().await;
    let too_many: Vec<String> = (0..65).map(|n| format!("a{n}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    for (bad, field) in [
        (request(0, 10_001, &[]), "max_page"),
        (request(0, 0, &["login", ""]), "actions[1]"),
        (request(0, 0, &["lo\u{0}gin"]), "actions[0]"),
        (request(0, 0, &too_many), "actions"),
    ] {
        let status = client.subscribe_events(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(reason(&status), Reason::InvalidField);
        assert!(
            status.message().contains(field),
            "{field} named in {:?}",
            status.message()
        );
    }
}

/// A position retention removed is refused with the oldest one still
/// stored; from 0, or from just below the oldest, the rest arrives.
pub async fn an_expired_position_is_refused_with_the_oldest_kept(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let store_db = Database::open(db.config());
    store(&store_db, &events("e", "login", 10)).await;
    let all = stored_positions(&store_db).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let expired = store_db.expire_events(Duration::ZERO, 4).await.unwrap();
    assert_eq!(expired.through, i64::try_from(all[3]).unwrap());
    let mut client = server.events().await;

    let status = client
        .subscribe_events(request(all[1], 0, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), Reason::PositionExpired);
    assert_eq!(orderflow_proto::oldest_position(&status), Some(all[3] + 1));

    for after in [0, all[3]] {
        let mut stream = client
            .subscribe_events(request(after, 0, &[]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read_events(&mut stream, 6, 500).await, all[4..]);
    }
}

/// A subscriber that falls behind retention mid-stream is told so: what it
/// received is a gapless run of positions, then POSITION_EXPIRED; never a
/// silent jump past events it did not get.
pub async fn a_subscriber_behind_retention_is_told_never_skipped(db: &TestDb) {
    let server = InProcess::start(db, &[]).await;
    let store_db = Database::open(db.config());
    store(&store_db, &events("e", "login", 3_000)).await;
    let all = stored_positions(&store_db).await;
    let mut stream = server
        .events()
        .await
        .subscribe_events(request(0, 1, &[]))
        .await
        .unwrap()
        .into_inner();
    let mut seen = vec![next_page(&mut stream, Duration::from_secs(5)).await.events[0].position];
    tokio::time::sleep(Duration::from_millis(5)).await;
    store_db
        .expire_events(Duration::ZERO, 10_000)
        .await
        .unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an answer in time")
        {
            Ok(Some(page)) => seen.extend(page.events.iter().map(|e| e.position)),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(reason(&status), Reason::PositionExpired, "{status:?}");
    assert_eq!(seen, all[..seen.len()], "a gapless run from the start");
    assert!(seen.len() < all.len());
}

/// With a token configured, SubscribeEvents needs it: events carry user
/// ids.
pub async fn subscriptions_need_the_token(db: &TestDb) {
    let server = InProcess::start(db, &[("ORDERFLOW_AUTH_TOKEN", "s3cret")]).await;
    let mut client = server.events().await;
    let status = client
        .subscribe_events(request(0, 0, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut right = Request::new(request(0, 0, &[]));
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    client.subscribe_events(right).await.unwrap();
}
