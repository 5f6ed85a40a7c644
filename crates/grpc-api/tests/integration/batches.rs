//! Acknowledged ingest over gRPC: acks per batch, in order; retries
//! answered as duplicates; a bad batch rejected whole with its field path,
//! after the acks of the batches before it.

use grpc_api::proto::{Event, EventBatch};
use test_support::TestDb;
use tokio_stream::StreamExt as _;
use tonic::Code;

use crate::support::InProcess;

fn event(n: usize) -> Event {
    Event {
        event_id: format!("e-{n}"),
        user_id: format!("u-{}", n % 7),
        action: "login".into(),
        ..Event::default()
    }
}

fn batch(producer: &str, sequence: u64, events: std::ops::Range<usize>) -> EventBatch {
    EventBatch {
        producer_id: producer.into(),
        sequence,
        events: events.map(event).collect(),
    }
}

#[tokio::test]
async fn unary_batches_are_acknowledged_once_and_retries_are_duplicates() {
    let db = TestDb::sqlite().await;
    let server = InProcess::start(&db, &[]).await;
    let mut events = server.events().await;
    let ack = events
        .publish_event_batch(batch("p", 1, 0..5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.sequence, ack.accepted, ack.duplicate), (1, 5, false));
    let retry = events
        .publish_event_batch(batch("p", 1, 0..5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (retry.sequence, retry.accepted, retry.duplicate),
        (1, 0, true)
    );
    // Without a producer id there is no such guarantee: both are taken.
    for _ in 0..2 {
        let ack = events
            .publish_event_batch(batch("", 1, 5..6))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((ack.accepted, ack.duplicate), (1, false));
    }
    let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
    assert_eq!(stats.received, 7);
}

#[tokio::test]
async fn bad_batches_are_invalid_argument_naming_the_field() {
    let db = TestDb::sqlite().await;
    let server = InProcess::start(&db, &[]).await;
    let mut events = server.events().await;
    let mut bad_event = batch("p", 1, 0..5);
    bad_event.events[3].user_id = String::new();
    let cases = [
        (bad_event, "events[3].user_id"),
        (batch("p", 0, 0..1), "sequence"),
        (batch(&"x".repeat(129), 1, 0..1), "producer_id"),
        (batch("p", 1, 0..0), "events"),
        (batch("p", 1, 0..10_001), "events"),
    ];
    for (request, field) in cases {
        let status = events.publish_event_batch(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field),
            "{:?} should name {field}",
            status.message()
        );
    }
    let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
    assert_eq!(stats.received, 0, "nothing of a rejected batch is taken");
    // A 128-character producer id and a 10,000-event batch are fine.
    let ack = events
        .publish_event_batch(batch(&"x".repeat(128), 1, 0..10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 10_000);
}

#[tokio::test]
async fn a_stream_acks_in_order_then_ends_at_a_bad_batch() {
    let db = TestDb::sqlite().await;
    let server = InProcess::start(&db, &[]).await;
    let mut events = server.events().await;
    let mut bad = batch("s", 4, 30..40);
    bad.events[2].action = String::new();
    let requests = vec![
        batch("s", 1, 0..10),
        batch("s", 2, 10..20),
        batch("s", 1, 0..10), // a retry inside the stream
        batch("s", 3, 20..30),
        bad,
        batch("s", 5, 40..50), // never read
    ];
    let mut acks = events
        .stream_event_batches(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let end = loop {
        match acks.next().await {
            Some(Ok(ack)) => seen.push((ack.sequence, ack.accepted, ack.duplicate)),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without the bad batch's status: {seen:?}"),
        }
    };
    assert_eq!(
        seen,
        [(1, 10, false), (2, 10, false), (1, 0, true), (3, 10, false)]
    );
    assert_eq!(end.code(), Code::InvalidArgument);
    assert!(
        end.message().contains("events[2].action"),
        "{}",
        end.message()
    );
    assert!(acks.next().await.is_none(), "nothing after the status");
    let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
    assert_eq!(
        stats.received, 30,
        "only the acknowledged batches were taken"
    );
}
