//! Pipeline files: arbitrary text as TOML. Properties: nothing panics, and a
//! file that validates builds a pipeline that runs a batch of events and
//! accounts for every one.
#![no_main]

use domain::{Action, Event, UserId};
use libfuzzer_sys::fuzz_target;
use transform_engine::{BatchOutcome, PipelineSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = PipelineSpec::from_toml(text) else {
        return;
    };
    let mut pipeline = spec.build();
    let events: Vec<Event> = (0..8)
        .map(|i| {
            let mut event = Event::new(
                UserId::parse(format!("u{}", i % 3)).expect("a valid id"),
                if i % 2 == 0 {
                    Action::Purchase
                } else {
                    Action::Login
                },
            );
            event.amount_cents = Some(domain::Cents::new(i64::from(i) * 100 - 300));
            event.attributes.insert("channel", "web");
            event
        })
        .collect();
    let mut out = BatchOutcome::default();
    pipeline.process_batch(events, &mut out);
    let accounted = out.kept.len() as u64 + out.dead.len() as u64 + out.filtered + out.deduplicated;
    assert_eq!(accounted, 8, "every event is accounted for");
});
