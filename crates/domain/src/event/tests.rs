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
