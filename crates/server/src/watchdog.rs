//! The stall watchdog: notices when the async runtime, or one of its worker
//! threads, stops making progress (a `std::sync::Mutex` held across
//! `.await`, blocking work on a worker, a busy loop), which a health check
//! answered from the same runtime cannot: the other workers go on answering
//! it.
//!
//! An OS thread of its own (so a stuck runtime cannot stop it) reads two
//! signals every [`HEARTBEAT`]:
//! - a heartbeat: a tiny task it spawns onto the runtime, once the last has
//!   run. When one has waited longer than the timeout, no worker has taken
//!   it. Spawned from outside, it wakes a parked worker, which then takes
//!   over the I/O and timer driver if the stuck worker had it: without that
//!   nudge, a worker that blocks right after waking from the driver leaves
//!   the others asleep and nobody polling sockets or timers.
//! - each worker's progress, from tokio's stable per-worker counters: a
//!   worker that is not parked (`worker_park_unpark_count` even) and whose
//!   park count and busy time have not moved for the timeout has been inside
//!   one poll all that time. (tokio folds a running worker's counters in
//!   every 61 tasks and whenever it parks, so a worker that runs tasks,
//!   however many, moves them.)
//!
//! The same thread publishes, once a second, the runtime's busy ratio (from
//! `tokio-metrics`' `RuntimeMonitor`) and the heartbeat's scheduling delay,
//! spawn to first poll (from its `TaskMonitor`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeMetrics};
use tokio_metrics::{RuntimeMonitor, TaskMonitor};

/// How often the watching thread looks, and sends a heartbeat (at most; a
/// timeout under four heartbeats shortens it).
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// How often the runtime metrics are published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A runtime that made no progress for longer than the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// No worker has taken the heartbeat task in this long.
    Heartbeat { late: Duration },
    /// This worker has been inside one poll for this long.
    Worker { index: usize, stuck: Duration },
}

impl Stall {
    fn length(self) -> Duration {
        match self {
            Self::Heartbeat { late } => late,
            Self::Worker { stuck, .. } => stuck,
        }
    }
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Heartbeat { late } => {
                write!(
                    f,
                    "no runtime worker has taken the heartbeat task in {late:.1?}"
                )
            }
            Self::Worker { index, stuck } => write!(
                f,
                "runtime worker {index} has been inside one poll for {stuck:.1?} \
                 (blocking work, or a lock held across .await, on a worker thread)"
            ),
        }
    }
}

/// Whether the watchdog sees a stall now; cheap to clone and to read.
#[derive(Debug, Clone, Default)]
pub struct Stalled(Arc<AtomicBool>);

impl Stalled {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The watchdog's thread; it stops when this is dropped.
pub struct Watchdog {
    stalled: Stalled,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    /// Starts the watching thread on `runtime`. With a `timeout`, a stall
    /// longer than it is logged at ERROR with the runtime's metrics, counted
    /// in `orderflow_runtime_stalls_total`, shown by
    /// `orderflow_runtime_stalled` and [`Watchdog::stalled`], and `on_stall`
    /// is called from the watching thread as it begins (to fail the liveness
    /// check at once; whoever reads [`Stalled`] restores it). Without one,
    /// the heartbeat and the metrics go on, and no stall is reported.
    pub fn start(
        runtime: &Handle,
        timeout: Option<Duration>,
        on_stall: impl Fn(Stall) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stalled = Stalled::default();
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Watcher {
            runtime: runtime.clone(),
            metrics: runtime.metrics(),
            progress: timeout.map(Progress::new),
            stalled: stalled.clone(),
            stop: Arc::clone(&stop),
            monitor: RuntimeMonitor::new(runtime),
            heartbeats: TaskMonitor::new(),
        };
        let period = timeout.map_or(HEARTBEAT, |timeout| HEARTBEAT.min(timeout / 4));
        std::thread::Builder::new()
            .name("orderflow-watchdog".to_owned())
            .spawn(move || watcher.run(period, on_stall))?;
        Ok(Self { stalled, stop })
    }

    /// Whether a stall is going on now.
    pub fn stalled(&self) -> Stalled {
        self.stalled.clone()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A heartbeat task sent to the runtime: when, and whether it has run.
struct Heartbeat {
    sent: Instant,
    taken: Arc<AtomicBool>,
}

/// The watching thread's state.
struct Watcher {
    runtime: Handle,
    metrics: RuntimeMetrics,
    progress: Option<Progress>,
    stalled: Stalled,
    stop: Arc<AtomicBool>,
    monitor: RuntimeMonitor,
    heartbeats: TaskMonitor,
}

impl Watcher {
    fn run(self, period: Duration, on_stall: impl Fn(Stall)) {
        let Self {
            runtime,
            metrics,
            mut progress,
            stalled,
            stop,
            monitor,
            heartbeats,
        } = self;
        let mut busy = monitor.intervals();
        let mut delays = heartbeats.intervals();
        let mut published = Instant::now();
        let mut heartbeat: Option<Heartbeat> = None;
        let mut stall_began: Option<(Instant, Stall)> = None;
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(period);
            let now = Instant::now();
            // One heartbeat at a time: a stuck runtime gets no pile of them.
            if heartbeat
                .as_ref()
                .is_none_or(|beat| beat.taken.load(Ordering::Acquire))
            {
                let taken = Arc::new(AtomicBool::new(false));
                let task = Arc::clone(&taken);
                drop(runtime.spawn(heartbeats.instrument(async move {
                    task.store(true, Ordering::Release);
                })));
                heartbeat = Some(Heartbeat { sent: now, taken });
            }
            if let Some(progress) = &mut progress {
                let late = heartbeat
                    .as_ref()
                    .filter(|beat| !beat.taken.load(Ordering::Acquire))
                    .map_or(Duration::ZERO, |beat| now.duration_since(beat.sent));
                let workers: Vec<WorkerSample> = (0..metrics.num_workers())
                    .map(|index| WorkerSample::read(&metrics, index))
                    .collect();
                match (progress.observe(now, late, &workers), stall_began) {
                    (Some(stall), None) => {
                        tracing::error!(
                            %stall,
                            workers = metrics.num_workers(),
                            alive_tasks = metrics.num_alive_tasks(),
                            global_queue_depth = metrics.global_queue_depth(),
                            worker_busy = ?workers.iter().map(|w| w.busy).collect::<Vec<_>>(),
                            worker_parked = ?workers.iter().map(WorkerSample::parked).collect::<Vec<_>>(),
                            "the async runtime is stalled: liveness fails until it clears"
                        );
                        metrics::counter!("orderflow_runtime_stalls_total").increment(1);
                        metrics::gauge!("orderflow_runtime_stalled").set(1.0);
                        stalled.0.store(true, Ordering::Release);
                        on_stall(stall);
                        stall_began = Some((now, stall));
                    }
                    (None, Some((began, stall))) => {
                        tracing::warn!(
                            %stall,
                            cleared_after = ?(now - began + stall.length()),
                            "the async runtime's stall cleared"
                        );
                        metrics::gauge!("orderflow_runtime_stalled").set(0.0);
                        stalled.0.store(false, Ordering::Release);
                        stall_began = None;
                    }
                    _ => {}
                }
            }
            if now.duration_since(published) >= PUBLISH_EVERY {
                published = now;
                if let Some(interval) = busy.next() {
                    // tokio-metrics' ratio sums the workers: up to one each.
                    let workers = interval.workers_count.max(1);
                    metrics::gauge!("orderflow_runtime_busy_ratio")
                        .set(interval.busy_ratio() / workers as f64);
                    metrics::gauge!("orderflow_runtime_workers").set(workers as f64);
                    metrics::gauge!("orderflow_runtime_global_queue_depth")
                        .set(interval.global_queue_depth as f64);
                    metrics::gauge!("orderflow_runtime_alive_tasks")
                        .set(interval.live_tasks_count as f64);
                }
                if let Some(interval) = delays.next() {
                    metrics::gauge!("orderflow_runtime_scheduling_delay_seconds")
                        .set(interval.mean_first_poll_delay().as_secs_f64());
                }
            }
        }
    }
}

/// One worker's stable counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WorkerSample {
    /// Odd while the worker is parked.
    park_unpark: u64,
    park: u64,
    busy: Duration,
}

impl WorkerSample {
    fn read(metrics: &RuntimeMetrics, index: usize) -> Self {
        Self {
            park_unpark: metrics.worker_park_unpark_count(index),
            park: metrics.worker_park_count(index),
            busy: metrics.worker_total_busy_duration(index),
        }
    }

    fn parked(&self) -> bool {
        self.park_unpark % 2 == 1
    }
}

/// When each worker last made progress, and the verdict.
struct Progress {
    timeout: Duration,
    /// Each worker's last sample and when it last moved (or was parked).
    workers: Vec<(WorkerSample, Instant)>,
}

impl Progress {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            workers: Vec::new(),
        }
    }

    /// The stall, if any, given how long the heartbeat has waited and each
    /// worker's counters now; the whole runtime's comes first.
    fn observe(&mut self, now: Instant, late: Duration, samples: &[WorkerSample]) -> Option<Stall> {
        if self.workers.len() != samples.len() {
            self.workers = samples.iter().map(|&sample| (sample, now)).collect();
        }
        let mut stuck = None;
        for (index, (&sample, (last, moved))) in samples.iter().zip(&mut self.workers).enumerate() {
            if sample.parked() || sample != *last {
                *last = sample;
                *moved = now;
            } else if now.duration_since(*moved) > self.timeout && stuck.is_none() {
                stuck = Some(Stall::Worker {
                    index,
                    stuck: now.duration_since(*moved),
                });
            }
        }
        if late > self.timeout {
            return Some(Stall::Heartbeat { late });
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn sample(park_unpark: u64, park: u64, busy_ms: u64) -> WorkerSample {
        WorkerSample {
            park_unpark,
            park,
            busy: Duration::from_millis(busy_ms),
        }
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_parked_worker_is_idle_not_stuck() {
        let start = Instant::now();
        let mut progress = Progress::new(TIMEOUT);
        for secs in [0, 3, 6, 60] {
            let now = at(start, secs);
            assert_eq!(
                progress.observe(now, Duration::ZERO, &[sample(7, 4, 10)]),
                None
            );
        }
    }

    #[test]
    fn a_running_worker_whose_counters_stand_still_past_the_timeout_is_stuck() {
        let start = Instant::now();
        let mut progress = Progress::new(TIMEOUT);
        let running = [sample(8, 4, 10), sample(3, 2, 5)];
        assert_eq!(progress.observe(start, Duration::ZERO, &running), None);
        let now = at(start, 5);
        assert_eq!(
            progress.observe(now, Duration::ZERO, &running),
            None,
            "at the timeout"
        );
        let now = at(start, 6);
        assert_eq!(
            progress.observe(now, Duration::ZERO, &running),
            Some(Stall::Worker {
                index: 0,
                stuck: Duration::from_secs(6)
            })
        );
    }

    #[test]
    fn a_running_worker_whose_busy_time_moves_makes_progress() {
        let start = Instant::now();
        let mut progress = Progress::new(TIMEOUT);
        for secs in 0..30 {
            let now = at(start, secs);
            let busy = sample(8, 4, secs * 1_000);
            assert_eq!(
                progress.observe(now, Duration::ZERO, &[busy]),
                None,
                "{secs} s"
            );
        }
    }

    #[test]
    fn a_stuck_worker_that_moves_again_is_no_longer_stuck() {
        let start = Instant::now();
        let mut progress = Progress::new(TIMEOUT);
        progress.observe(start, Duration::ZERO, &[sample(8, 4, 10)]);
        let now = at(start, 9);
        assert!(
            progress
                .observe(now, Duration::ZERO, &[sample(8, 4, 10)])
                .is_some()
        );
        let now = at(start, 10);
        assert_eq!(
            progress.observe(now, Duration::ZERO, &[sample(9, 5, 9_010)]),
            None
        );
    }

    #[test]
    fn a_late_heartbeat_is_a_stall_of_the_whole_runtime() {
        let start = Instant::now();
        let mut progress = Progress::new(TIMEOUT);
        let now = at(start, 7);
        assert_eq!(
            progress.observe(now, Duration::from_secs(6), &[sample(1, 1, 0)]),
            Some(Stall::Heartbeat {
                late: Duration::from_secs(6)
            })
        );
    }

    /// The real thing: a worker blocked in `std::thread::sleep` is seen
    /// within the timeout and a heartbeat, while the other worker takes the
    /// heartbeats, and the stall clears once the sleep ends.
    #[test]
    fn a_worker_blocked_on_the_real_runtime_is_seen_and_then_cleared() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (seen, stalls) = std::sync::mpsc::channel();
        let watchdog = Watchdog::start(
            runtime.handle(),
            Some(Duration::from_secs(1)),
            move |stall| {
                let _ = seen.send(stall);
            },
        )
        .unwrap();
        let stalled = watchdog.stalled();
        std::thread::sleep(Duration::from_millis(1_500));
        assert!(!stalled.is_set(), "an idle runtime is not stalled");
        runtime.spawn(async { std::thread::sleep(Duration::from_secs(3)) });
        let stall = stalls.recv_timeout(Duration::from_millis(2_500)).unwrap();
        assert!(matches!(stall, Stall::Worker { .. }), "{stall}");
        assert!(stalled.is_set());
        let cleared = Instant::now() + Duration::from_secs(5);
        while stalled.is_set() && Instant::now() < cleared {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!stalled.is_set(), "the stall cleared when the sleep ended");
    }
}
