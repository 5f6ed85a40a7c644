//! The pipeline's behaviour: each step kind, batching not changing outcomes, and
//! failures becoming dead letters with the step named.

use domain::{Action, Event};
use transform_engine::{BatchOutcome, PipelineSpec, Totals};

fn run(toml: &str, events: Vec<Event>) -> (BatchOutcome, transform_engine::Pipeline) {
    let mut pipeline = PipelineSpec::from_toml(toml).unwrap().build();
    let mut out = BatchOutcome::default();
    pipeline.process_batch(events, &mut out);
    (out, pipeline)
}

#[test]
fn twelve_steps_give_every_event_one_outcome_whatever_the_batching() {
    let spec = PipelineSpec::from_toml(crate::TWELVE_STEPS).unwrap();
    // The fixture twice: the second copy's ids are all repeats.
    let mut events = crate::legacy_events();
    events.extend(crate::legacy_events());
    let (mut a, mut b) = (spec.build(), spec.build());
    let (mut out_a, mut out_b) = (BatchOutcome::default(), BatchOutcome::default());
    for chunk in events.chunks(64) {
        a.process_batch(chunk.to_vec(), &mut out_a);
    }
    b.process_batch(events, &mut out_b);
    assert_eq!(out_a.kept, out_b.kept);
    assert_eq!(out_a.dead, out_b.dead);
    assert_eq!(
        (out_a.filtered, out_a.deduplicated),
        (out_b.filtered, out_b.deduplicated)
    );
    assert_eq!(out_a.total(), 1_000, "every event has exactly one outcome");
    assert!(
        out_a.deduplicated >= 300,
        "repeated ids dropped: {}",
        out_a.deduplicated
    );
    assert!(out_a.filtered > 0);
    // Batching does not change the aggregated totals.
    let totals = |p: &transform_engine::Pipeline| {
        p.aggregates()
            .into_iter()
            .map(|(name, table)| (name, table.lock().unwrap().snapshot()))
            .collect::<Vec<_>>()
    };
    assert_eq!(totals(&a), totals(&b));
}

#[test]
fn enrich_rename_and_filter_change_what_they_should() {
    let toml = r#"
        [[steps]]
        kind = "filter"
        keep = { actions = ["purchase"] }
        [[steps]]
        kind = "enrich"
        attribute = "tier"
        from = "attribute:campaign"
        table = { spring-sale = "promo" }
        default = "regular"
        [[steps]]
        kind = "rename"
        from = "ip"
        to = "client_ip"
    "#;
    let events = crate::legacy_events();
    let purchases = events
        .iter()
        .filter(|e| e.action == Action::Purchase)
        .count();
    let (out, _) = run(toml, events);
    assert_eq!(out.kept.len(), purchases);
    assert_eq!(out.filtered as usize, 500 - purchases);
    for event in &out.kept {
        assert!(event.attributes.get("ip").is_none());
        let expected = match event.attributes.get("campaign").map(|c| &**c) {
            Some("spring-sale") => "promo",
            _ => "regular",
        };
        assert_eq!(event.attributes.get("tier").map(|t| &**t), Some(expected));
    }
    assert!(
        out.kept
            .iter()
            .any(|e| e.attributes.get("client_ip").is_some())
    );
}

#[test]
fn failing_steps_dead_letter_with_the_step_named() {
    let toml = r#"
        [[steps]]
        kind = "rename"
        from = "device"
        to = "client_device"
        required = true
    "#;
    let events = crate::legacy_events();
    let with_device = events
        .iter()
        .filter(|e| e.attributes.get("device").is_some())
        .count();
    let (out, _) = run(toml, events);
    assert_eq!(out.kept.len(), with_device);
    assert_eq!(out.dead.len(), 500 - with_device);
    assert_eq!(
        out.dead[0].reason,
        "steps[0] (rename): attribute \"device\" is missing"
    );
    // The dead letter holds the event as it arrived at the failing step.
    assert!(out.dead[0].event.attributes.get("device").is_none());
}

#[test]
fn aggregates_count_and_sum_and_overflow_is_a_dead_letter() {
    let toml = r#"
        [[steps]]
        kind = "aggregate"
        name = "spend"
        by = "user_id"
        max_keys = 2
    "#;
    let event = |user: &str, cents: i64| {
        Event::from_json(&format!(
            r#"{{"user_id":"{user}","action":"purchase","amount_cents":{cents}}}"#
        ))
        .unwrap()
    };
    let events = vec![
        event("a", 5),
        event("a", 7),
        event("b", i64::MAX),
        event("b", 1),
        event("c", 3),
    ];
    let (out, pipeline) = run(toml, events);
    assert_eq!(out.kept.len(), 4);
    assert_eq!(out.dead.len(), 1);
    assert!(
        out.dead[0]
            .reason
            .contains("aggregate spend: the sum overflows"),
        "{}",
        out.dead[0].reason
    );
    let (_, table) = &pipeline.aggregates()[0];
    let (keys, other) = table.lock().unwrap().snapshot();
    assert_eq!(
        keys.iter()
            .map(|(k, t)| (k.to_string(), *t))
            .collect::<Vec<_>>(),
        vec![
            (
                "a".to_owned(),
                Totals {
                    count: 2,
                    sum_cents: 12
                }
            ),
            (
                "b".to_owned(),
                Totals {
                    count: 1,
                    sum_cents: i64::MAX
                }
            ),
        ]
    );
    assert_eq!(
        other,
        Totals {
            count: 1,
            sum_cents: 3
        },
        "keys past max_keys go to the catch-all"
    );
}

#[test]
fn keys_by_action_agree_with_the_names_for_known_and_unknown_actions() {
    // Known actions take an array slot instead of a hash lookup; unknown
    // ones, and known ones absent from the table, must come out the same
    // as by name, over several batches (the slots are filled lazily).
    let toml = r#"
        [[steps]]
        kind = "enrich"
        attribute = "class"
        from = "action"
        table = { purchase = "money", add_to_cart = "intent" }
        default = "none"

        [[steps]]
        kind = "aggregate"
        name = "per_action"
        by = "action"

        [[steps]]
        kind = "aggregate"
        name = "per_class"
        by = "attribute:class"
    "#;
    let actions = [
        "purchase",
        "login",
        "add_to_cart",
        "purchase",
        "refund",
        "view",
    ];
    let events: Vec<Event> = (0..60)
        .map(|n| {
            let action = actions[n % actions.len()];
            Event::from_json(&format!(
                r#"{{"user_id":"u","action":"{action}","amount_cents":{n}}}"#
            ))
            .unwrap()
        })
        .collect();
    let mut pipeline = PipelineSpec::from_toml(toml).unwrap().build();
    let mut out = BatchOutcome::default();
    for batch in events.chunks(7) {
        pipeline.process_batch(batch.to_vec(), &mut out);
    }
    assert_eq!(out.kept.len(), 60);
    for event in &out.kept {
        let expected = match event.action.as_str() {
            "purchase" => "money",
            "add_to_cart" => "intent",
            _ => "none",
        };
        assert_eq!(
            event.attributes.get("class").map(|v| v.as_str()),
            Some(expected)
        );
    }
    let mut expected: std::collections::BTreeMap<String, Totals> = Default::default();
    for (n, action) in (0..60).map(|n| (n, actions[n % actions.len()])) {
        let totals = expected.entry(action.to_owned()).or_default();
        totals.count += 1;
        totals.sum_cents += n as i64;
    }
    let tables = pipeline.aggregates();
    let (keys, other) = tables[0].1.lock().unwrap().snapshot();
    let keys: std::collections::BTreeMap<String, Totals> =
        keys.into_iter().map(|(k, t)| (k.to_string(), t)).collect();
    assert_eq!(keys, expected);
    assert_eq!(other, Totals::default());
    let (classes, _) = tables[1].1.lock().unwrap().snapshot();
    let counts: Vec<(String, u64)> = classes
        .into_iter()
        .map(|(k, t)| (k.to_string(), t.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("intent".to_owned(), 10),
            ("money".to_owned(), 20),
            ("none".to_owned(), 30)
        ]
    );
}

#[test]
fn deduplication_remembers_between_half_and_all_of_its_window() {
    let toml = "[[steps]]\nkind = \"deduplicate\"\nwindow = 4";
    let event = |id: u32| {
        Event::from_json(&format!(
            r#"{{"event_id":"e{id}","user_id":"u","action":"login"}}"#
        ))
        .unwrap()
    };
    // Generations of 2: [1 2] fills → previous=[1 2], so 1 is still a
    // repeat; [3 4] fills → previous=[3 4], and 1 and 2 are forgotten (new
    // again); [1 2] fills → previous=[1 2], so the last 2 is a repeat.
    let ids = [1, 2, 1, 3, 4, 1, 2, 2];
    let (out, _) = run(toml, ids.iter().map(|&id| event(id)).collect());
    let kept: Vec<_> = out
        .kept
        .iter()
        .map(|e| e.event_id.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(kept, ["e1", "e2", "e3", "e4", "e1", "e2"]);
    assert_eq!(out.deduplicated, 2);
}
