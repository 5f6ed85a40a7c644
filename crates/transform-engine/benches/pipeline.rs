//! Events per second per core through the twelve-step pipeline
//! (`test_support::TWELVE_STEPS`: all five kinds) over the legacy events, in batches
//! of 64 as the engine runs them, against two baselines that live only here:
//! the same steps behind `Vec<Box<dyn Transform>>`, and the step-major loop
//! order (each step over the whole batch). Before timing, every loop is
//! checked to give the library's outcome.
//!
//! A round's batches gather in one outcome, as the log consumer gathers the
//! records it commits together (each batch's kept events are copied onto
//! the last's); `enum_event_major_handoff` instead hands each batch's kept
//! events off, as the engine's workers do, so none is copied.
//!
//! Run: `cargo bench -p transform-engine --bench pipeline`; figures go to
//! docs/benchmarks.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark code fails loudly"
)]

use std::hint::black_box;

/// The server's allocator (see the `orderflow` binary), so the figures are
/// the engine's as it runs there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain::Event;
use transform_engine::{BatchOutcome, Pipeline, PipelineSpec, TransformStep, Verdict};

const EVENTS: usize = 10_000;
const BATCH: usize = 64;
use test_support::TWELVE_STEPS as STEPS;

/// The dynamic-dispatch baseline.
trait Transform {
    fn apply(&mut self, event: &mut Event) -> Verdict;
}

macro_rules! transform_via {
    ($($ty:ident),*) => {$(
        impl Transform for DynStep<transform_engine::$ty> {
            fn apply(&mut self, event: &mut Event) -> Verdict {
                self.0.apply(event)
            }
        }
    )*};
}

struct DynStep<T>(T);
transform_via!(Enrich, Filter, Rename, Aggregate, Deduplicate);

fn boxed(step: TransformStep) -> Box<dyn Transform> {
    match step {
        TransformStep::Enrich(s) => Box::new(DynStep(s)),
        TransformStep::Filter(s) => Box::new(DynStep(s)),
        TransformStep::Rename(s) => Box::new(DynStep(s)),
        TransformStep::Aggregate(s) => Box::new(DynStep(s)),
        TransformStep::Deduplicate(s) => Box::new(DynStep(s)),
    }
}

/// Event-major, each event moved into the output: the loop the dyn
/// baseline runs, and (over the enum) `enum_event_major_moving`, so the two
/// differ only in how `apply` dispatches.
fn event_major_moving<S>(
    steps: &mut [S],
    apply: impl Fn(&mut S, &mut Event) -> Verdict,
    batch: Vec<Event>,
    out: &mut BatchOutcome,
) {
    'events: for mut event in batch {
        for step in steps.iter_mut() {
            match apply(step, &mut event) {
                Verdict::Keep => {}
                Verdict::Filtered => {
                    out.filtered += 1;
                    continue 'events;
                }
                Verdict::Duplicate => {
                    out.deduplicated += 1;
                    continue 'events;
                }
                Verdict::Failed(reason) => {
                    out.dead.push(domain::DeadLetter { event, reason });
                    continue 'events;
                }
            }
        }
        out.kept.push(event);
    }
}

/// Event-major over trait objects: what a `Vec<Box<dyn Transform>>`
/// pipeline does.
fn dyn_event_major(steps: &mut [Box<dyn Transform>], batch: Vec<Event>, out: &mut BatchOutcome) {
    event_major_moving(steps, |step, event| step.apply(event), batch, out);
}

/// The enum steps in the dyn baseline's loop, to tell dispatch apart from
/// the loop.
fn enum_event_major_moving(steps: &mut [TransformStep], batch: Vec<Event>, out: &mut BatchOutcome) {
    event_major_moving(steps, TransformStep::apply, batch, out);
    publish(steps);
}

/// Step-major: each step over the whole batch with one `match` per step
/// per batch (each arm's loop is monomorphic), survivors moved between two
/// buffers after every step.
fn enum_step_major(
    steps: &mut [TransformStep],
    buffers: &mut (Vec<Verdict>, Vec<Event>),
    mut events: Vec<Event>,
    out: &mut BatchOutcome,
) {
    let (verdicts, survivors) = buffers;
    for step in steps.iter_mut() {
        if events.is_empty() {
            break;
        }
        verdicts.clear();
        match step {
            TransformStep::Enrich(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
            TransformStep::Filter(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
            TransformStep::Rename(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
            TransformStep::Deduplicate(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
            TransformStep::Aggregate(s) => verdicts.extend(events.iter_mut().map(|e| s.apply(e))),
        }
        survivors.clear();
        for (event, verdict) in events.drain(..).zip(verdicts.drain(..)) {
            match verdict {
                Verdict::Keep => survivors.push(event),
                Verdict::Filtered => out.filtered += 1,
                Verdict::Duplicate => out.deduplicated += 1,
                Verdict::Failed(reason) => out.dead.push(domain::DeadLetter { event, reason }),
            }
        }
        std::mem::swap(&mut events, survivors);
    }
    publish(steps);
    out.kept.append(&mut events);
}

/// Makes a batch's aggregate changes visible, as the library's loop does.
fn publish(steps: &mut [TransformStep]) {
    for step in steps {
        if let TransformStep::Aggregate(aggregate) = step {
            aggregate.publish();
        }
    }
}

/// What `run` makes of the fixture twice over (the second copy all
/// repeats): kept events, dead events and the counts.
fn outcome_of(
    fixture: &[Event],
    mut run: impl FnMut(Vec<Event>, &mut BatchOutcome),
) -> (Vec<Event>, Vec<Event>, u64, u64) {
    let mut out = BatchOutcome::default();
    let twice: Vec<Event> = fixture.iter().chain(fixture).cloned().collect();
    for chunk in twice.chunks(BATCH) {
        run(chunk.to_vec(), &mut out);
    }
    let dead = out.dead.into_iter().map(|letter| letter.event).collect();
    (out.kept, dead, out.filtered, out.deduplicated)
}

/// Fresh input (`test_support::with_fresh_ids`: ids unique per round, so
/// de-duplication sees realistic traffic), cut into engine-sized batches.
fn input(round: &mut u64, fixture: &[Event]) -> Vec<Vec<Event>> {
    *round += 1;
    test_support::with_fresh_ids(fixture, *round, EVENTS)
        .chunks(BATCH)
        .map(<[Event]>::to_vec)
        .collect()
}

/// What happens to a batch's kept events after the batch.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// The whole round gathers in one outcome (the log consumer's way).
    Gathered,
    /// Each batch's kept events are handed off (to a vector standing in for
    /// the sink) and the next batch starts from an empty outcome, as in the
    /// engine's workers.
    HandedOff,
}

/// Times `run` over `iters` fresh inputs, one batch at a time, keeping the
/// output as `output` says. Building the input and dropping the output
/// happen outside the clock, and the output buffers are reused across
/// rounds, as the engine's workers reuse theirs.
fn timed(
    iters: u64,
    round: &mut u64,
    fixture: &[Event],
    out: &mut BatchOutcome,
    output: Output,
    mut run: impl FnMut(Vec<Event>, &mut BatchOutcome),
) -> Duration {
    let mut handed: Vec<Vec<Event>> = Vec::with_capacity(EVENTS / BATCH + 1);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batches = input(round, fixture);
        out.clear();
        handed.clear();
        let started = Instant::now();
        for batch in batches {
            run(batch, out);
            if output == Output::HandedOff {
                handed.push(std::mem::replace(&mut out.kept, Vec::with_capacity(BATCH)));
            }
        }
        total += started.elapsed();
        black_box((&out, &handed));
    }
    total
}

fn bench(c: &mut Criterion) {
    let fixture = test_support::legacy_events();
    let spec = PipelineSpec::from_toml(STEPS).unwrap();
    assert_eq!(spec.len(), 12);

    let mut group = c.benchmark_group("pipeline_12_steps");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let mut round = 0;
    let mut out = BatchOutcome {
        kept: Vec::with_capacity(EVENTS),
        ..BatchOutcome::default()
    };

    // The baselines compute what the library computes.
    let expected = {
        let mut pipeline = spec.build();
        outcome_of(&fixture, |batch, out| pipeline.process_batch(batch, out))
    };
    let (mut steps, mut buffers) = (spec.build().into_steps(), Default::default());
    let step_major = outcome_of(&fixture, |batch, out| {
        enum_step_major(&mut steps, &mut buffers, batch, out);
    });
    assert!(
        step_major == expected,
        "step-major differs from the library"
    );
    let mut boxed_steps: Vec<Box<dyn Transform>> =
        spec.build().into_steps().into_iter().map(boxed).collect();
    let dynamic = outcome_of(&fixture, |batch, out| {
        dyn_event_major(&mut boxed_steps, batch, out);
    });
    assert!(dynamic == expected, "dyn dispatch differs from the library");

    let (mut steps, mut buffers) = (spec.build().into_steps(), Default::default());
    group.bench_function("enum_step_major", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut round,
                &fixture,
                &mut out,
                Output::Gathered,
                |batch, out| {
                    enum_step_major(&mut steps, &mut buffers, batch, out);
                },
            )
        })
    });

    let mut pipeline: Pipeline = spec.build();
    group.bench_function("enum_event_major", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut round,
                &fixture,
                &mut out,
                Output::Gathered,
                |batch, out| {
                    pipeline.process_batch(batch, out);
                },
            )
        })
    });

    let mut pipeline: Pipeline = spec.build();
    group.bench_function("enum_event_major_handoff", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut round,
                &fixture,
                &mut out,
                Output::HandedOff,
                |batch, out| {
                    pipeline.process_batch(batch, out);
                },
            )
        })
    });

    let mut steps = spec.build().into_steps();
    group.bench_function("enum_event_major_moving", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut round,
                &fixture,
                &mut out,
                Output::Gathered,
                |batch, out| {
                    enum_event_major_moving(&mut steps, batch, out);
                },
            )
        })
    });

    let mut steps: Vec<Box<dyn Transform>> =
        spec.build().into_steps().into_iter().map(boxed).collect();
    group.bench_function("dyn_event_major", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut round,
                &fixture,
                &mut out,
                Output::Gathered,
                |batch, out| {
                    dyn_event_major(&mut steps, batch, out);
                },
            )
        })
    });

    // The floor: a loop that touches each event and does nothing else.
    group.bench_function("bare_loop", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut round,
                &fixture,
                &mut out,
                Output::Gathered,
                |batch, out| {
                    for event in batch {
                        if event.amount_cents.is_some_and(|a| a.get() < 0) {
                            out.filtered += 1;
                        } else {
                            out.kept.push(event);
                        }
                    }
                },
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
