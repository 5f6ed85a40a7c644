//! The event log's binary form (`Event::decode_batch`): arbitrary bytes as
//! one log row. Properties: nothing panics; whatever decodes encodes to
//! bytes that decode to the same events and encode identically; and each
//! decoded event is a valid stored event (its JSON loads back equal), since
//! the pipeline's outputs are written from these.
#![no_main]

use domain::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = Event::decode_batch(data) {
        let mut written = Vec::new();
        Event::encode_batch(&events, &mut written);
        let again = Event::decode_batch(&written).expect("its own output decodes");
        assert_eq!(again, events);
        let mut twice = Vec::new();
        Event::encode_batch(&again, &mut twice);
        assert_eq!(twice, written, "encoding is stable");
        for event in &events {
            let json = event.to_json().expect("a decoded event serialises");
            assert_eq!(Event::from_json(&json).ok().as_ref(), Some(event));
        }
    }
});
