use super::*;

fn event(line: &str) -> Event {
    Event::from_json(line).unwrap()
}

/// Every field, an unknown action, a leap second, a negative amount and
/// attributes beyond the inline capacity; then the fewest fields.
fn sample() -> Vec<Event> {
    vec![
        event(
            r#"{"event_id":"evt-1","user_id":"u\t1","action":"add_to_cart","occurred_at":"2016-12-31T23:59:60.5Z","amount_cents":-250,"attributes":{"a":"1","b":"","c":"ユーザー","d":"4","e":"5"}}"#,
        ),
        event(r#"{"user_id":"u-2","action":"login"}"#),
    ]
}

fn encoded(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    Event::encode_batch(events, &mut out);
    out
}

#[test]
fn a_batch_reads_back_equal_and_writes_the_same_json() {
    let events = sample();
    let decoded = Event::decode_batch(&encoded(&events)).unwrap();
    assert_eq!(decoded, events);
    for (read, written) in decoded.iter().zip(&events) {
        assert_eq!(read.to_json().unwrap(), written.to_json().unwrap());
    }
    assert_eq!(Event::decode_batch(&encoded(&[])).unwrap(), vec![]);
}

#[test]
fn the_layout_is_pinned_byte_for_byte() {
    // Log rows already on disk are read by later releases: a change here is
    // a new layout version, never an edit of version 1.
    let events = vec![
        event(
            r#"{"event_id":"e","user_id":"u","action":"x","occurred_at":"1970-01-01T00:00:01.5Z","amount_cents":-1,"attributes":{"k":"v"}}"#,
        ),
        event(r#"{"user_id":"w","action":"refund"}"#),
    ];
    let golden: &[u8] = &[
        1, 2, // version, two events
        7, 1, b'e', 1, b'u', 4, 1, b'x', // all flags, ids, another action
        2, 0x80, 0xca, 0xb5, 0xee, 0x01, 1, // 1 s, 500,000,000 ns, one digit
        1, // -1 cent
        1, 1, b'k', 1, b'v', // one attribute
        0, 1, b'w', 3, 0, // no flags, user, refund, no attributes
    ];
    assert_eq!(encoded(&events), golden);
    assert_eq!(Event::decode_batch(golden).unwrap(), events);
}

#[test]
fn every_truncation_is_an_error_not_a_panic_or_fewer_events() {
    let bytes = encoded(&sample());
    for len in 0..bytes.len() {
        let error = Event::decode_batch(&bytes[..len]).unwrap_err();
        assert!(
            matches!(error, DomainError::MalformedEvent(_)),
            "{len}: {error}"
        );
    }
}

#[test]
fn damage_is_reported_with_its_offset() {
    let fails = |bytes: &[u8], says: &str| {
        let error = Event::decode_batch(bytes).unwrap_err().to_string();
        assert!(error.contains(says), "{error:?} lacks {says:?}");
    };
    fails(&[2, 0], "byte 0: unknown layout version 2");
    fails(&[1, 0, 9], "byte 2: 1 bytes after the last event");
    fails(&[1, 200, 1], "claims 200 events");
    fails(
        &[1, 1, 8, 1, b'u', 0, 0],
        "byte 2: unknown event flags 0x08",
    );
    fails(&[1, 1, 0, 1, b'u', 9, 0], "byte 5: unknown action tag 9");
    fails(
        &[1, 1, 0, 1, b'u', 4, 5, b'l', b'o', b'g', b'i', b'n', 0],
        "byte 6: invalid action: the known action login is written as another",
    );
    fails(
        &[1, 1, 0, 0, 0, 0],
        "byte 3: invalid user_id: must not be empty",
    );
    fails(&[1, 1, 0, 1, 0xff, 0, 0], "byte 3: text is not UTF-8");
    fails(
        &[1, 1, 0, 1, b'u', 0, 2, 1, b'k', 0, 1, b'k', 0],
        "byte 10: attribute keys out of order or repeated",
    );
    fails(
        &[1, 1, 0, 1, b'u', 0, 2, 1, b'k', 0, 1, b'a', 0],
        "attribute keys out of order",
    );
    fails(&[1, 1, 0, 1, b'u', 0, 1, 1, 0, 0], "attribute key contains");
    fails(
        &[1, 1, 0, 1, b'u', 0, 1, 1, b'k', 1, 0],
        "attribute value contains",
    );
    // A leap nanosecond count outside second 59, and eleven digits.
    fails(
        &[1, 1, 2, 1, b'u', 0, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03, 0, 0],
        "byte 6: invalid occurred_at: is not a valid instant",
    );
    fails(
        &[1, 1, 2, 1, b'u', 0, 0, 0, 11, 0],
        "has more than nine fraction digits",
    );
    // 16 ns written with no fraction digits (found by the fuzz target).
    fails(
        &[1, 1, 2, 1, b'u', 0, 0, 16, 0, 0],
        "has nanoseconds finer than its fraction digits",
    );
    fails(
        &[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        "byte 1: a number longer than 64 bits",
    );
}

#[test]
fn repeated_keys_share_one_string_across_a_batch() {
    let events = vec![
        event(r#"{"user_id":"a","action":"login","attributes":{"country":"DE"}}"#),
        event(r#"{"user_id":"b","action":"login","attributes":{"country":"FR"}}"#),
    ];
    let decoded = Event::decode_batch(&encoded(&events)).unwrap();
    let key = |event: &Event| event.attributes.iter().next().unwrap().0.clone();
    assert!(ArcStr::ptr_eq(&key(&decoded[0]), &key(&decoded[1])));
    assert_eq!(decoded, events);
}
