//! Property tests: arbitrary events survive write → read → write unchanged,
//! in the stored JSON and in the event log's binary form.

use chrono::DateTime;
use domain::{Action, Cents, Event, EventId, Timestamp, UserId};
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // Years 1970..=9999, any nanosecond, any written precision 0..=9.
    (0i64..253_402_300_799, 0u32..1_000_000_000, 0u32..=9).prop_map(|(secs, nanos, digits)| {
        let truncated = nanos / 10u32.pow(9 - digits) * 10u32.pow(9 - digits);
        let at = DateTime::from_timestamp(secs, truncated).unwrap();
        let fraction = if digits == 0 {
            String::new()
        } else {
            format!(
                ".{:0width$}",
                truncated / 10u32.pow(9 - digits),
                width = digits as usize
            )
        };
        Timestamp::parse(&format!("{}{fraction}Z", at.format("%Y-%m-%dT%H:%M:%S"))).unwrap()
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Login),
        Just(Action::Logout),
        Just(Action::Purchase),
        Just(Action::Refund),
        "[a-z_.A-Z0-9-]{1,64}".prop_map(|a| Action::parse(&a).unwrap()),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        proptest::option::of("[[:alnum:]-]{1,40}"),
        any::<String>().prop_filter("1..=128 chars", |s| (1..=128).contains(&s.chars().count())),
        action(),
        proptest::option::of(timestamp()),
        proptest::option::of(any::<i64>()),
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..5),
    )
        .prop_map(
            |(event_id, user_id, action, occurred_at, amount, attributes)| Event {
                event_id: event_id.map(|id| EventId::parse(id).unwrap()),
                user_id: UserId::parse(user_id).unwrap(),
                action,
                occurred_at,
                amount_cents: amount.map(Cents::new),
                attributes: attributes.into_iter().collect(),
            },
        )
}

proptest! {
    #[test]
    fn events_round_trip(event in event()) {
        let written = event.to_json().unwrap();
        let read = Event::from_json(&written).unwrap();
        prop_assert_eq!(&read, &event);
        prop_assert_eq!(read.to_json().unwrap(), written);
    }

    #[test]
    fn batches_round_trip_through_the_log_form(events in proptest::collection::vec(event(), 0..6)) {
        let mut bytes = Vec::new();
        Event::encode_batch(&events, &mut bytes);
        let read = Event::decode_batch(&bytes).unwrap();
        prop_assert_eq!(&read, &events);
        let mut again = Vec::new();
        Event::encode_batch(&read, &mut again);
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn timestamps_round_trip_through_their_parts(ts in timestamp()) {
        let (seconds, nanos, digits) = ts.to_parts();
        prop_assert_eq!(Timestamp::from_parts(seconds, nanos, digits).unwrap(), ts);
    }

    #[test]
    fn timestamps_write_back_as_parsed(ts in timestamp()) {
        let written = ts.to_string();
        prop_assert_eq!(Timestamp::parse(&written).unwrap(), ts);
    }
}
