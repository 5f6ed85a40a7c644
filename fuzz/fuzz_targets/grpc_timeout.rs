//! The `grpc-timeout` parser. Properties: nothing panics (no overflow on
//! `99999999H`), and a value is accepted only in the spec's form: 1 to 8
//! ASCII digits and one unit letter.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if grpc_api::parse_grpc_timeout(text).is_some() {
        let (digits, unit) = text.split_at(text.len() - 1);
        assert!((1..=8).contains(&digits.len()), "{text:?}");
        assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
        assert!(
            matches!(unit, "H" | "M" | "S" | "m" | "u" | "n"),
            "{text:?}"
        );
    }
});
