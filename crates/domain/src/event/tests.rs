use super::*;

#[test]
fn known_actions_write_their_lower_case_name() {
    assert_eq!(serde_json::to_string(&Action::Login).unwrap(), r#""login""#);
    assert_eq!(Action::parse("refund").unwrap(), Action::Refund);
}

#[test]
fn unknown_actions_are_carried_verbatim() {
    let action = Action::parse("add_to_cart").unwrap();
    assert!(matches!(action, Action::Other(_)));
    assert_eq!(action.as_str(), "add_to_cart");
    // Not lower-cased, not collapsed into a known action.
    assert_eq!(Action::parse("LOGIN").unwrap().as_str(), "LOGIN");
    assert_ne!(Action::parse("LOGIN").unwrap(), Action::Login);
}

#[test]
fn known_index_finds_each_known_action_in_known_and_no_other() {
    for (index, action) in Action::KNOWN.iter().enumerate() {
        assert_eq!(action.known_index(), Some(index));
        assert_eq!(Action::parse(action.as_str()).unwrap(), *action);
    }
    assert_eq!(Action::parse("add_to_cart").unwrap().known_index(), None);
}

#[test]
fn empty_action_is_rejected_naming_the_field() {
    assert_eq!(
        Action::parse("").unwrap_err().to_string(),
        "invalid action: must not be empty"
    );
}

#[test]
fn unknown_fields_and_duplicate_keys_are_errors_not_silent_loss() {
    let err = Event::from_json(r#"{"user_id":"u","action":"login","colour":"red"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    let err =
        Event::from_json(r#"{"user_id":"u","action":"login","attributes":{"a":"1","a":"2"}}"#)
            .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"attributes has the key "a" twice"#),
        "{err}"
    );
}

#[test]
fn invalid_parts_name_their_field() {
    let err = Event::from_json(r#"{"user_id":"","action":"login"}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid user_id: must not be empty"),
        "{err}"
    );
    let err =
        Event::from_json(r#"{"user_id":"u","action":"login","amount_cents":1.5}"#).unwrap_err();
    assert!(err.to_string().starts_with("malformed event:"), "{err}");
}

#[test]
fn attributes_are_written_sorted() {
    let mut event = Event::new(UserId::parse("u").unwrap(), Action::Login);
    event.attributes.insert("zeta", "1");
    event.attributes.insert("alpha", "2");
    assert_eq!(
        event.to_json().unwrap(),
        r#"{"user_id":"u","action":"login","attributes":{"alpha":"2","zeta":"1"}}"#
    );
}

#[test]
fn attributes_from_an_iterator_are_sorted_and_the_last_value_wins() {
    let entries = [("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("b", "5")];
    let collected: Attributes = entries.into_iter().collect();
    let from_client = Attributes::from_client("attributes", entries).unwrap();
    for attributes in [collected, from_client] {
        let pairs: Vec<_> = attributes.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(pairs, [("a", "2"), ("b", "5"), ("c", "4")]);
    }
}

#[test]
fn inserts_and_removes_anywhere_keep_the_attributes_sorted() {
    // Against a BTreeMap, in an order that inserts before, between and
    // after existing keys and crosses the inline capacity both ways.
    let keys = ["m", "c", "x", "a", "p", "e", "z", "b", "n"];
    let mut attributes = Attributes::new();
    let mut model = std::collections::BTreeMap::new();
    let same = |attributes: &Attributes, model: &std::collections::BTreeMap<&str, String>| {
        let pairs: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (&**k, &**v)).collect();
        let expected: Vec<(&str, &str)> = model.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(pairs, expected);
    };
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(attributes.insert(*key, n.to_string()), None);
        model.insert(*key, n.to_string());
        same(&attributes, &model);
    }
    assert_eq!(attributes.insert("c", "again").as_deref(), Some("1"));
    model.insert("c", "again".to_owned());
    same(&attributes, &model);
    for key in ["a", "n", "m", "z", "absent", "c", "x", "b", "p", "e"] {
        assert_eq!(
            attributes.remove(key).map(|v| v.to_string()),
            model.remove(key),
            "{key}"
        );
        same(&attributes, &model);
    }
    assert!(attributes.is_empty());
}

#[test]
fn client_attributes_are_capped_in_count_and_bytes() {
    let entries = |n: usize, value: &str| {
        (0..n)
            .map(|i| (format!("k{i:05}"), value.to_owned()))
            .collect::<Vec<_>>()
    };
    let at_cap = Attributes::from_client("attributes", entries(Attributes::MAX_ENTRIES, "v"));
    assert_eq!(at_cap.map(|a| a.len()), Ok(Attributes::MAX_ENTRIES));
    let over = Attributes::from_client("events[2].attributes", entries(100_000, "")).unwrap_err();
    assert!(
        over.to_string()
            .starts_with("invalid events[2].attributes: has 100000 entries, at most 256"),
        "{over}"
    );
    let wide = Attributes::from_client("attributes", entries(16, &"v".repeat(4096)));
    assert!(wide.is_err(), "16 values of 4 KiB are over 64 KiB");
    let nul = Attributes::from_client("attributes", [("k".to_owned(), "v\0".to_owned())]);
    assert!(nul.is_err());
}

#[test]
fn stored_attributes_load_however_many_there_are_and_refuse_nul_and_repeats() {
    let many: Vec<String> = (0..10_000).map(|i| format!(r#""k{i}":"v""#)).collect();
    let line = format!(
        r#"{{"user_id":"u","action":"login","attributes":{{{}}}}}"#,
        many.join(",")
    );
    let event = Event::from_json(&line).unwrap();
    assert_eq!(event.attributes.len(), 10_000);
    assert!(event.attributes.iter().is_sorted_by(|(a, _), (b, _)| a < b));
    let nul = Event::from_json(r#"{"user_id":"u","action":"login","attributes":{"k":"\u0000"}}"#);
    assert!(nul.is_err());
}

#[test]
fn nul_is_refused_in_user_ids() {
    let err = Event::from_json(r#"{"user_id":"a\u0000b","action":"login"}"#).unwrap_err();
    assert!(err.to_string().contains("user_id"), "{err}");
}

#[test]
fn json_lines_are_each_events_stored_form() {
    let lines = [
        r#"{"event_id":"e-1","user_id":"u-1","action":"login","occurred_at":"2026-01-02T03:04:05.060Z","attributes":{"ip":"10.0.0.1","note":"tab\tand \"quote\" and é"}}"#,
        r#"{"user_id":"u-2","action":"add_to_cart","amount_cents":-5}"#,
    ];
    let events: Vec<Event> = lines.iter().map(|l| Event::from_json(l).unwrap()).collect();
    assert_eq!(
        Event::json_lines(&events, false).unwrap(),
        lines.join("\n"),
        "separated"
    );
    assert_eq!(
        Event::json_lines(&events, true).unwrap(),
        format!("{}\n{}\n", lines[0], lines[1]),
        "terminated"
    );
    assert_eq!(Event::json_lines(&[], false).unwrap(), "");
}
