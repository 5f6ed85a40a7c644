//! Wire-format snapshots of every serialized type. A format change shows up
//! here as a diff in review; CI runs with `INSTA_UPDATE=no`, so an
//! unreviewed snapshot fails instead of being written.

use domain::{Action, Attributes, Cents, Event, EventId, Timestamp, UserId};
use insta::assert_snapshot;

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn full_event() -> Event {
    Event {
        event_id: Some(EventId::parse("evt-1").unwrap()),
        user_id: UserId::parse("u-1").unwrap(),
        action: Action::Purchase,
        occurred_at: Some(Timestamp::parse("2025-09-01T12:43:13.001Z").unwrap()),
        amount_cents: Some(Cents::new(250_000)),
        attributes: [("device", "iPhone"), ("campaign", "spring-sale")]
            .into_iter()
            .collect(),
    }
}

#[test]
fn event_full() {
    assert_snapshot!(full_event().to_json().unwrap(), @r#"{"event_id":"evt-1","user_id":"u-1","action":"purchase","occurred_at":"2025-09-01T12:43:13.001Z","amount_cents":250000,"attributes":{"campaign":"spring-sale","device":"iPhone"}}"#);
}

#[test]
fn event_minimal() {
    let event = Event::new(UserId::parse("abc123").unwrap(), Action::Login);
    assert_snapshot!(event.to_json().unwrap(), @r#"{"user_id":"abc123","action":"login"}"#);
}

#[test]
fn actions() {
    let all = [
        Action::Login,
        Action::Logout,
        Action::Purchase,
        Action::Refund,
        Action::parse("wishlist_add").unwrap(),
    ];
    assert_snapshot!(json(&all), @r#"["login","logout","purchase","refund","wishlist_add"]"#);
}

#[test]
fn ids_and_money() {
    assert_snapshot!(json(&UserId::parse("quote\"user").unwrap()), @r#""quote\"user""#);
    assert_snapshot!(json(&EventId::parse("evt-00100001").unwrap()), @r#""evt-00100001""#);
    assert_snapshot!(json(&Cents::new(-1999)), @"-1999");
}

#[test]
fn timestamps() {
    let all = [
        "2025-12-11T23:45:32Z",
        "2025-01-27T12:27:38.250Z",
        "2025-01-27T12:27:38.123456Z",
    ]
    .map(|t| Timestamp::parse(t).unwrap());
    assert_snapshot!(json(&all), @r#"["2025-12-11T23:45:32Z","2025-01-27T12:27:38.250Z","2025-01-27T12:27:38.123456Z"]"#);
}

#[test]
fn attributes() {
    let attributes: Attributes = [("note", "line1\nline2"), ("campaign", "")]
        .into_iter()
        .collect();
    assert_snapshot!(json(&attributes), @r#"{"campaign":"","note":"line1\nline2"}"#);
}
