//! The servers' one-pass batch reader (`wire::EventBatch`: `wire::fast` for
//! events in the shape clients send, prost for anything else) against prost
//! alone reading every event first and converting each after. Property: they
//! accept the same batches, and an accepted batch holds the same events in
//! the same order. (The unit proptests in `grpc-api/src/wire.rs` also hold
//! the error messages together; this target lets coverage find the shapes.)
#![no_main]

use grpc_api::{convert, wire};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use transform_engine::MAX_BATCH_EVENTS;

/// `orderflow.v1.EventBatch` read the plain way: every event into a list.
#[derive(Clone, PartialEq, prost::Message)]
struct WholeBatch {
    #[prost(string, tag = "1")]
    producer_id: String,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(message, repeated, tag = "3")]
    events: Vec<wire::Event>,
}

/// The batch's events if prost and the conversion accept it whole.
fn two_passes(data: &[u8]) -> Option<Vec<domain::Event>> {
    let batch = WholeBatch::decode(data).ok()?;
    if batch.producer_id.chars().count() > 128
        || batch.sequence == 0
        || batch.events.is_empty()
        || batch.events.len() > MAX_BATCH_EVENTS
    {
        return None;
    }
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, event) in batch.events.into_iter().enumerate() {
        events.push(convert::event_from_wire(event, Some(i)).ok()?);
    }
    Some(events)
}

fuzz_target!(|data: &[u8]| {
    let one = wire::EventBatch::decode(data)
        .ok()
        .and_then(|batch| convert::event_batch_from_wire(batch).ok())
        .map(|batch| batch.events);
    assert_eq!(one, two_passes(data), "one pass and two disagree");
});
