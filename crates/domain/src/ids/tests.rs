use super::*;

#[test]
fn user_id_bounds_count_characters_not_bytes() {
    assert!(UserId::parse("").is_err());
    assert!(UserId::parse("ユ".repeat(128)).is_ok());
    let err = UserId::parse("x".repeat(129)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid user_id: is 129 characters long, at most 128 are allowed"
    );
}

#[test]
fn user_id_keeps_control_characters_that_stored_events_contain() {
    assert_eq!(UserId::parse("tab\tuser").unwrap().as_str(), "tab\tuser");
}

#[test]
fn printable_ids_reject_control_characters_and_padding() {
    assert!(ProductId::parse("p\n1").is_err());
    let err = ProductId::parse(" p1").unwrap_err();
    assert!(err.to_string().starts_with("invalid product_id:"), "{err}");
}

#[test]
fn nested_fields_are_named_in_errors() {
    let err = ProductId::parse_field("lines[3].product_id", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid lines[3].product_id: must not be empty"
    );
}

#[test]
fn sku_accepts_only_code_characters() {
    assert!(Sku::parse("ABC-123_x.2").is_ok());
    assert!(Sku::parse("ABC 123").is_err());
}

#[test]
fn order_id_round_trips_its_hyphenated_form() {
    let id = OrderId::generate();
    let text = id.to_string();
    assert_eq!(text.len(), 36);
    assert_eq!(OrderId::parse(&text).unwrap(), id);
}

#[test]
fn order_id_rejects_other_spellings() {
    let uuid = uuid::Uuid::parse_str(&OrderId::generate().to_string()).unwrap();
    for bad in [
        uuid.simple().to_string(),
        uuid.braced().to_string(),
        uuid.urn().to_string(),
        "42".to_owned(),
        String::new(),
    ] {
        let err = OrderId::parse(&bad).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid order_id:"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn generated_order_ids_sort_by_creation() {
    let first = OrderId::generate();
    let second = OrderId::generate();
    assert!(first < second);
}
