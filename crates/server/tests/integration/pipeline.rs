//! The transform engine over the real stores, through the server's
//! adapters: events through the twelve-step pipeline into SQLite and
//! PostgreSQL.

use std::sync::Arc;

use domain::Event;
use server::sinks::{Output, StoreSink};
use storage::{Database, DeadLetterStore, EventStore};
use test_support::{LEGACY_EVENTS as LEGACY, TWELVE_STEPS, TestDb};
use transform_engine::{Admission, Engine, EngineConfig, OverflowPolicy, PipelineSpec};

pub async fn engine_writes_through_the_real_stores(db: &TestDb) {
    let database = Database::open(db.config());
    let sink = Arc::new(StoreSink {
        db: database.clone(),
        output: Output::Database,
    });
    let toml = format!(
        "{TWELVE_STEPS}\n[[steps]]\nkind = \"rename\"\nfrom = \"note\"\nto = \"memo\"\nrequired = true\n"
    );
    let config = EngineConfig {
        policy: OverflowPolicy::Block,
        pipeline: PipelineSpec::from_toml(&toml).unwrap(),
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, Arc::clone(&sink), sink);
    let ingest = engine.ingest();
    for line in LEGACY.lines() {
        let admitted = ingest
            .submit(Event::from_json(line).unwrap())
            .await
            .unwrap();
        assert_eq!(admitted, Admission::Accepted);
    }
    let stats = engine.shutdown().await;
    assert!(stats.balanced() && stats.in_flight == 0, "{stats:?}");
    assert_eq!(stats.received, 500);

    let stored = database.read_events(None, 1_000).await.unwrap();
    let letters = database.read_dead_letters(None, 1_000).await.unwrap();
    assert_eq!(stats.processed, stored.len() as u64);
    assert_eq!(stats.dead_lettered, letters.len() as u64);
    assert!(stats.processed > 0 && stats.dead_lettered > 0, "{stats:?}");
    // Stored events carry the pipeline's changes, in canonical form.
    for event in &stored {
        let parsed = Event::from_json(&event.json).unwrap();
        assert_eq!(parsed.to_json().unwrap(), event.json);
        assert_eq!(
            parsed.attributes.get("pipeline").map(|v| &**v),
            Some("bench-v1")
        );
        assert!(parsed.attributes.get("memo").is_some());
    }
    assert!(
        letters
            .iter()
            .all(|l| l.reason == "steps[12] (rename): attribute \"note\" is missing")
    );
}
