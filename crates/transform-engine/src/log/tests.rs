//! Unit tests of the log's parts: the sequence rule, the bound's
//! bookkeeping, the hand-off. The whole log under random client behaviour
//! is the integration suite's `log_model`.

use std::sync::Arc;

use super::bound::Bound;
use super::handoff::{Handoff, Next};
use super::{Appended, check_sequence};

#[test]
fn the_sequence_rule_answers_as_the_log() {
    assert_eq!(check_sequence(Some(6), 7), None);
    assert_eq!(check_sequence(Some(7), 7), Some(Appended::Duplicate));
    assert_eq!(
        check_sequence(Some(5), 7),
        Some(Appended::Gap { expected: 6 })
    );
}

fn total(bound: &Bound) -> u64 {
    let s = bound.state();
    s.free + s.held + s.backlog
}

#[tokio::test]
async fn a_share_dropped_before_the_log_gives_its_room_back_once() {
    let bound = Arc::new(Bound::new(100, 0, true));
    let share = bound.take(40).await.unwrap();
    assert_eq!((bound.state().free, bound.state().held), (60, 40));
    drop(share);
    assert_eq!(bound.state().free, 100);
    assert_eq!(total(&bound), 100);
}

#[tokio::test]
async fn a_share_in_the_backlog_is_freed_by_the_consumer_only() {
    let bound = Arc::new(Bound::new(100, 0, true));
    bound.take(40).await.unwrap().enter_backlog();
    let s = bound.state();
    assert_eq!((s.free, s.held, s.backlog), (60, 0, 40));
    bound.leave(40);
    assert_eq!((bound.state().free, bound.state().backlog), (100, 0));
}

#[tokio::test]
async fn a_backlog_above_the_bound_at_start_is_paid_off_first() {
    // A restart with a lower bound than the run that filled the log.
    let bound = Arc::new(Bound::new(100, 250, true));
    let s = bound.state();
    assert_eq!((s.free, s.backlog, s.debt), (0, 250, 150));
    bound.leave(100);
    assert_eq!((bound.state().free, bound.state().debt), (0, 50));
    bound.leave(150);
    let s = bound.state();
    assert_eq!(
        (s.free, s.backlog, s.debt),
        (100, 0, 0),
        "never above the bound"
    );
}

#[tokio::test]
async fn a_shared_log_counts_its_backlog_without_permits() {
    let bound = Arc::new(Bound::new(100, 0, false));
    let share = bound.take(30).await.unwrap();
    bound.count_appended(30);
    drop(share);
    assert_eq!((bound.state().free, bound.state().backlog), (100, 30));
    bound.leave(30);
    assert_eq!((bound.state().free, bound.state().backlog), (100, 0));
}

#[test]
fn the_handoff_vouches_only_for_contiguous_positions() {
    let mut handoff = Handoff::with_bound(100);
    // At start the writer cannot know what an earlier run appended.
    handoff.offer(5, Vec::new());
    assert_eq!(handoff.next(0, 10, u64::MAX), Next::Read);
    assert_eq!(
        handoff.next(5, 10, u64::MAX),
        Next::Wait,
        "the cursor passed it"
    );
    handoff.offer(6, Vec::new());
    let Next::Process(records) = handoff.next(5, 10, u64::MAX) else {
        panic!("position 6 follows 5");
    };
    assert_eq!(records.len(), 1);
    // A failed append may have stored rows: the next one is read.
    handoff.lose_track();
    handoff.offer(9, Vec::new());
    assert_eq!(handoff.next(6, 10, u64::MAX), Next::Read);
}
