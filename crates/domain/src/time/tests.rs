use super::*;

fn round_trip(text: &str) -> String {
    Timestamp::parse(text).unwrap().to_string()
}

#[test]
fn keeps_the_written_precision() {
    for text in [
        "2025-12-11T23:45:32Z",
        "2025-01-27T12:27:38.250Z",
        "2025-01-27T12:27:38.000Z",
        "2025-01-27T12:27:38.5Z",
        "2025-01-27T12:27:38.123456789Z",
    ] {
        assert_eq!(round_trip(text), text);
    }
}

#[test]
fn offsets_are_written_as_utc() {
    assert_eq!(
        round_trip("2025-01-27T14:27:38.250+02:00"),
        "2025-01-27T12:27:38.250Z"
    );
}

#[test]
fn rejects_what_it_could_not_write_back() {
    let err = Timestamp::parse("2025-01-27T12:27:38.1234567891Z").unwrap_err();
    assert!(err.to_string().contains("nine fraction digits"), "{err}");
    let err = Timestamp::parse("yesterday").unwrap_err();
    assert!(err.to_string().starts_with("invalid occurred_at:"), "{err}");
}

#[test]
fn numeric_instants_choose_the_shortest_exact_precision() {
    let at = DateTime::from_timestamp(1_700_000_000, 250_000_000).unwrap();
    assert_eq!(
        Timestamp::from_datetime(at).to_string(),
        "2023-11-14T22:13:20.250Z"
    );
    let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    assert_eq!(
        Timestamp::from_datetime(at).to_string(),
        "2023-11-14T22:13:20Z"
    );
    let at = DateTime::from_timestamp(1_700_000_000, 1_500).unwrap();
    assert_eq!(
        Timestamp::from_datetime(at).to_string(),
        "2023-11-14T22:13:20.000001500Z"
    );
}

/// Found by the `event_json` fuzz target: a leap second was written back as
/// `:59`, changing stored data.
#[test]
fn a_leap_second_is_written_back_as_read() {
    for text in ["2025-09-09T22:30:60Z", "2016-12-31T23:59:60.500Z"] {
        let parsed = Timestamp::parse(text).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(Timestamp::parse(&parsed.to_string()).unwrap(), parsed);
    }
}
