//! The stored event format: arbitrary text through the parser. Properties:
//! nothing panics, and any line that loads writes back to text that loads to
//! the same event and writes back identically (the byte-exact contract).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = domain::Event::from_json(text) {
        let written = event.to_json().expect("a loaded event serialises");
        let again = domain::Event::from_json(&written).expect("its own output loads");
        assert_eq!(again, event);
        assert_eq!(again.to_json().ok(), Some(written), "writing is stable");
    }
});
