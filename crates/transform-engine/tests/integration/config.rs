//! Pipeline files: valid ones load, invalid ones are rejected with the step
//! and field named.

use transform_engine::{ConfigError, PipelineSpec};

#[test]
fn the_benchmark_pipeline_loads_all_twelve_steps() {
    let spec = PipelineSpec::from_toml(crate::TWELVE_STEPS).unwrap();
    assert_eq!(spec.len(), 12);
    let kinds: Vec<_> = spec.build().steps().iter().map(|s| s.kind()).collect();
    for kind in ["enrich", "filter", "rename", "aggregate", "deduplicate"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn the_default_pipeline_never_changes_an_event() {
    let mut pipeline = PipelineSpec::default().build();
    let events = crate::legacy_events();
    let mut out = transform_engine::BatchOutcome::default();
    pipeline.process_batch(events.clone(), &mut out);
    assert_eq!(out.kept, events, "the fixture has no repeated ids");
}

fn rejected(toml: &str) -> String {
    match PipelineSpec::from_toml(toml) {
        Ok(spec) => panic!("accepted {spec:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn errors_name_the_step_and_the_field() {
    let cases = [
        (
            "[[steps]]\nkind = \"filter\"\nkeep = { actions = [\"login\"] }\ndrop = { amount_below = 0 }",
            "steps[0] (filter): keep: set `keep` or `drop`, not both",
        ),
        (
            "[[steps]]\nkind = \"deduplicate\"\n[[steps]]\nkind = \"enrich\"\nattribute = \"a\"",
            "steps[1] (enrich): value: set `value`, or `from` and `table`",
        ),
        (
            "[[steps]]\nkind = \"aggregate\"\nname = \"x\"\nby = \"colour\"",
            "steps[0] (aggregate): by: \"colour\" is not `action`, `user_id` or `attribute:NAME`",
        ),
        (
            "[[steps]]\nkind = \"deduplicate\"\nwindow = 0",
            "steps[0] (deduplicate): window: is 0, must be 1..=10000000",
        ),
        (
            "[[steps]]\nkind = \"rename\"\nfrom = \"ip\"\nto = \"ip\"",
            "steps[0] (rename): to: renames \"ip\" to itself",
        ),
        (
            "[[steps]]\nkind = \"filter\"\nkeep = { actions = [] }",
            "steps[0] (filter): keep: `actions` must list at least one action",
        ),
    ];
    for (toml, expected) in cases {
        assert_eq!(rejected(toml), expected);
    }
}

#[test]
fn unknown_kinds_and_fields_are_parse_errors_naming_them() {
    let error = rejected("[[steps]]\nkind = \"explode\"");
    assert!(error.contains("explode"), "{error}");
    let error =
        rejected("[[steps]]\nkind = \"rename\"\nfrom = \"a\"\nto = \"b\"\ncolour = \"red\"");
    assert!(error.contains("colour"), "{error}");
    assert!(matches!(
        PipelineSpec::from_toml("steps = 3"),
        Err(ConfigError::Parse(_))
    ));
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let error =
        PipelineSpec::from_file(std::path::Path::new("/nonexistent/pipeline.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot read pipeline file /nonexistent/pipeline.toml"),
        "{error}"
    );
}
