//! The stall watchdog against the real binary: the failure this product's
//! story opens with (a worker thread stuck, CPU at 0%, health checks still
//! passing) reproduced with failpoints, then caught.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderflow_proto::proto::GetOrderRequest;
use orderflow_proto::proto::order_service_client::OrderServiceClient;
use test_support::TestDb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Server, binary};

/// How long each failpoint keeps its worker stuck.
const STALL: Duration = Duration::from_secs(6);
/// `ORDERFLOW_STALL_TIMEOUT` where the watchdog is on.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The two ways the original bug gets a worker thread stuck.
#[derive(Clone, Copy, Debug)]
enum Stuck {
    /// `std::thread::sleep` inside the GetOrder handler (the `fail` crate's
    /// `sleep` action).
    BlockingSleep,
    /// A `std::sync::Mutex` held across `.await` by one GetOrder call, so a
    /// second call blocks its worker in `lock()`.
    LockAcrossAwait,
}

impl Stuck {
    fn failpoint(self) -> String {
        let ms = STALL.as_millis();
        match self {
            Self::BlockingSleep => format!("grpc-get-order=sleep({ms})"),
            Self::LockAcrossAwait => format!("grpc-get-order-lock=return({ms})"),
        }
    }

    /// Starts the calls that get one worker stuck; they end with the stall.
    async fn begin(self, server: &Server) -> Vec<tokio::task::JoinHandle<()>> {
        let calls = match self {
            Self::BlockingSleep => 1,
            Self::LockAcrossAwait => 2,
        };
        let mut started = Vec::new();
        for n in 0..calls {
            // A connection of its own for each call, so the stuck worker
            // holds nothing the health checks need.
            let mut orders = OrderServiceClient::new(server.channel().await);
            started.push(tokio::spawn(async move {
                let call = orders.get_order(GetOrderRequest {
                    order_id: format!("00000000-0000-7000-8000-{n:012}"),
                });
                let answer = tokio::time::timeout(STALL + Duration::from_secs(10), call).await;
                assert!(
                    answer.is_ok(),
                    "{self:?}: a call still stuck after the stall"
                );
            }));
            // The holder first, then the call that waits for its lock.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        started
    }
}

/// Starts a server on SQLite with two runtime workers and `failpoint`.
async fn server(db: &TestDb, stall_timeout: &str, failpoint: &str) -> Server {
    Server::start(
        db,
        &[
            ("TOKIO_WORKER_THREADS", "2"),
            ("ORDERFLOW_STALL_TIMEOUT", stall_timeout),
            ("FAILPOINTS", failpoint),
        ],
    )
}

/// The liveness status, or UNKNOWN when no answer comes within a second.
async fn liveness(server: &Server) -> ServingStatus {
    let check = async {
        // A fresh connection each time, as a kubelet's probe makes.
        let mut health = HealthClient::new(server.channel().await);
        health
            .check(HealthCheckRequest {
                service: "liveness".into(),
            })
            .await
    };
    match tokio::time::timeout(Duration::from_secs(1), check).await {
        Ok(Ok(answer)) => answer.into_inner().status(),
        _ => ServingStatus::Unknown,
    }
}

/// `orderflow health --service liveness` against the server at `address`:
/// its exit code.
fn health_command(address: &str) -> Option<i32> {
    let listen = address.trim_start_matches("http://");
    Command::new(binary())
        .env_clear()
        .env("ORDERFLOW_LISTEN", listen)
        .args(["health", "--service", "liveness", "--timeout", "2s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// With the watchdog on, a stuck worker fails liveness within the timeout
/// and two seconds, for the probe and for `orderflow health`; the stall is
/// logged at ERROR and counted; once the worker is free, liveness is SERVING
/// again.
async fn a_stuck_worker_fails_liveness_until_it_clears(stuck: Stuck) {
    let db = TestDb::sqlite().await;
    let timeout = humantime::format_duration(TIMEOUT).to_string();
    let server = server(&db, &timeout, &stuck.failpoint()).await;
    assert_eq!(liveness(&server).await, ServingStatus::Serving);

    let began = Instant::now();
    let calls = stuck.begin(&server).await;
    let failed_by = began + TIMEOUT + Duration::from_secs(2);
    // Answered NOT_SERVING (the heartbeat keeps a free worker on the
    // sockets), not merely unanswered.
    while liveness(&server).await != ServingStatus::NotServing {
        assert!(
            Instant::now() < failed_by,
            "{stuck:?}: liveness not NOT_SERVING {:?} into the stall",
            began.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(began.elapsed() < STALL, "{stuck:?}: seen before it ended");
    let command = tokio::task::spawn_blocking({
        let listen = server.address.clone();
        move || health_command(&listen)
    });
    assert_ne!(
        command.await.unwrap(),
        Some(0),
        "{stuck:?}: orderflow health"
    );
    let body = crate::suite::scrape(&server).await;
    assert_eq!(
        metric(&body, "orderflow_runtime_stalls_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(metric(&body, "orderflow_runtime_stalled"), Some(1.0));
    assert!(
        server
            .logs()
            .iter()
            .any(|line| line.contains("\"level\":\"ERROR\"")
                && line.contains("the async runtime is stalled")
                && line.contains("inside one poll")),
        "{stuck:?}: no ERROR naming the stall in {:#?}",
        server.logs()
    );

    for call in calls {
        call.await.unwrap();
    }
    let serving_by = Instant::now() + Duration::from_secs(3);
    while liveness(&server).await != ServingStatus::Serving {
        assert!(Instant::now() < serving_by, "{stuck:?}: liveness not back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = crate::suite::scrape(&server).await;
    assert_eq!(metric(&body, "orderflow_runtime_stalled"), Some(0.0));
    assert!(
        server
            .logs()
            .iter()
            .any(|line| line.contains("stall cleared")),
        "{stuck:?}"
    );
}

/// The original failure, reproduced: with the watchdog off, the same stuck
/// worker leaves liveness SERVING all through the stall, so no orchestrator
/// would restart the process.
async fn without_the_watchdog_a_stuck_worker_stays_live(stuck: Stuck) {
    let db = TestDb::sqlite().await;
    let server = server(&db, "off", &stuck.failpoint()).await;
    let began = Instant::now();
    let calls = stuck.begin(&server).await;
    while began.elapsed() < TIMEOUT + Duration::from_secs(3) {
        assert_eq!(
            liveness(&server).await,
            ServingStatus::Serving,
            "{stuck:?} at {:?}",
            began.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        calls.iter().any(|call| !call.is_finished()),
        "{stuck:?}: the worker is still stuck, and liveness said SERVING throughout"
    );
    let command = tokio::task::spawn_blocking({
        let listen = server.address.clone();
        move || health_command(&listen)
    });
    assert_eq!(
        command.await.unwrap(),
        Some(0),
        "{stuck:?}: orderflow health"
    );
    let body = crate::suite::scrape(&server).await;
    assert_eq!(metric(&body, "orderflow_runtime_stalls_total"), Some(0.0));
}

/// Each case runs its own server; they run at once (a stuck worker spends
/// no CPU), which keeps the four under one stall's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_watchdog_fails_liveness_on_a_stuck_worker_which_otherwise_goes_unseen() {
    let cases = [Stuck::BlockingSleep, Stuck::LockAcrossAwait].map(|stuck| {
        (
            tokio::spawn(a_stuck_worker_fails_liveness_until_it_clears(stuck)),
            tokio::spawn(without_the_watchdog_a_stuck_worker_stays_live(stuck)),
        )
    });
    for (on, off) in cases {
        on.await.unwrap();
        off.await.unwrap();
    }
}
