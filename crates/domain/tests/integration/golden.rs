//! Golden compatibility: events already in the store load and write back byte
//! for byte. The fixture is the project's own copy of the legacy events.

use domain::{Action, Event};

use test_support::LEGACY_EVENTS as LEGACY;

#[test]
fn every_legacy_line_round_trips_byte_for_byte() {
    let mut checked = 0;
    for (number, line) in LEGACY.lines().enumerate() {
        let event = Event::from_json(line).unwrap_or_else(|e| panic!("line {}: {e}", number + 1));
        let written = event.to_json().unwrap();
        assert_eq!(written, line, "line {} changed on write-back", number + 1);
        checked += 1;
    }
    assert_eq!(checked, 500, "the fixture has 500 events");
}

#[test]
fn legacy_events_pass_through_the_log_form_unchanged() {
    // What the durable log holds between the ack and the pipeline: the
    // stored JSON written afterwards must be the line that came in.
    let events: Vec<Event> = LEGACY
        .lines()
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let mut bytes = Vec::new();
    Event::encode_batch(&events, &mut bytes);
    let read = Event::decode_batch(&bytes).unwrap();
    assert_eq!(read.len(), 500);
    for ((event, line), number) in read.iter().zip(LEGACY.lines()).zip(1..) {
        assert_eq!(event.to_json().unwrap(), line, "line {number} changed");
    }
}

#[test]
fn legacy_lines_cover_the_tricky_cases() {
    // Guards the guard: if the fixture lost these, the round-trip test would
    // prove less than it claims.
    for needle in [
        r#"\"user"#,
        r#"\\slash"#,
        r#"\t"#,
        r#"\n"#,
        "ユーザー",
        ".250Z",
        ":32Z\"",
    ] {
        assert!(LEGACY.contains(needle), "fixture lacks {needle}");
    }
}

#[test]
fn an_unknown_action_round_trips_unchanged() {
    let line = r#"{"event_id":"evt-9","user_id":"u-1","action":"add_to_cart","occurred_at":"2026-01-02T03:04:05.060Z","attributes":{"sku":"A-1"}}"#;
    let event = Event::from_json(line).unwrap();
    assert_eq!(event.action.as_str(), "add_to_cart");
    assert!(matches!(event.action, Action::Other(_)));
    assert_eq!(event.to_json().unwrap(), line);
}
