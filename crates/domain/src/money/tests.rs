use super::*;

#[test]
fn currency_accepts_three_upper_case_letters_only() {
    assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
    for bad in ["eur", "EU", "EURO", "E1R", "", "ÉUR"] {
        let err = Currency::parse(bad).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid currency:"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn checked_arithmetic_reports_overflow() {
    assert_eq!(Cents::new(2).checked_mul(3), Some(Cents::new(6)));
    assert_eq!(Cents::new(i64::MAX).checked_add(Cents::new(1)), None);
    assert_eq!(Cents::new(i64::MAX / 2 + 1).checked_mul(2), None);
}
