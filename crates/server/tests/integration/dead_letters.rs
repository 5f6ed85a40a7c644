//! `orderflow dead-letters`: counts, a replay that puts each letter back
//! into the flow once even after an earlier replay was killed midway, and
//! purge.

use std::time::Duration;

use domain::{DeadLetter, Event, WriteId};
use orderflow_proto::proto::EventBatch;
use storage::DeadLetterStore as _;
use test_support::TestDb;

use crate::support::{Server, run};

fn letter(n: usize, reason: &str) -> DeadLetter {
    DeadLetter {
        event: Event::from_json(&format!(
            r#"{{"event_id":"dl-{n}","user_id":"u-{n}","action":"purchase","amount_cents":{n}}}"#
        ))
        .unwrap(),
        reason: reason.to_owned(),
    }
}

pub async fn dead_letters_are_listed_replayed_once_and_purged(db: &TestDb) {
    let letters: Vec<DeadLetter> = (0..25)
        .map(|n| {
            letter(
                n,
                if n < 15 {
                    "sink refused"
                } else {
                    "step failed"
                },
            )
        })
        .collect();
    db.dead_letter(WriteId::generate(), &letters).await.unwrap();

    let (status, stdout, stderr) = run(db, &["dead-letters", "list", "--limit", "2"], None);
    assert!(status.success(), "{stderr}");
    let listed = String::from_utf8(stdout).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "25 dead letters");
    assert!(
        lines[1].trim_start().starts_with("15 ") && lines[1].contains("sink refused"),
        "{listed}"
    );
    assert!(
        lines[2].trim_start().starts_with("10 ") && lines[2].contains("step failed"),
        "{listed}"
    );
    let oldest: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(oldest["event"]["event_id"], "dl-0");
    assert_eq!(lines.len(), 5, "counts, then the 2 oldest");

    let server = Server::start(db, &[]);
    // An earlier replay was killed twice over: once after its batch was
    // acknowledged but before it deleted the letters, once after labelling
    // a batch but before sending it.
    let acked = db
        .label_dead_letters("dead-letters/acked", 5)
        .await
        .unwrap();
    let mut events = server.events().await;
    let sent = events
        .publish_event_batch(EventBatch {
            producer_id: "dead-letters/acked".into(),
            sequence: 1,
            events: acked
                .iter()
                .map(|l| grpc_api::convert::event_to_wire(&Event::from_json(&l.json).unwrap()))
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.accepted, 5);
    db.label_dead_letters("dead-letters/unsent", 5)
        .await
        .unwrap();

    let (status, _, stderr) = run(
        db,
        &[
            "dead-letters",
            "replay",
            "--server",
            &server.address,
            "--batch",
            "4",
        ],
        None,
    );
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("replayed 25 of 25"), "{stderr}");
    assert!(db.read_dead_letters(None, 100).await.unwrap().is_empty());

    crate::support::drained(&mut events, Duration::from_secs(30)).await;
    assert!(server.terminate().success());
    let stored = crate::support::stored_event_ids(db);
    for n in 0..25 {
        assert_eq!(
            stored.get(&format!("dl-{n}")),
            Some(&1),
            "dl-{n} stored once"
        );
    }
    assert_eq!(stored.len(), 25);

    // Purge: what is older than the time goes, what is newer stays.
    db.dead_letter(WriteId::generate(), &[letter(100, "old")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    db.dead_letter(WriteId::generate(), &[letter(101, "new")])
        .await
        .unwrap();
    let (status, _, stderr) = run(
        db,
        &["dead-letters", "purge", "--before", &cut.to_rfc3339()],
        None,
    );
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("1 dead letters from before"), "{stderr}");
    let left = db.read_dead_letters(None, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "new");
}
