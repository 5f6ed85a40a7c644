//! What clients of the contract rely on, checked black-box.

use std::time::Duration;

use orderflow_proto::proto::{
    CreateOrderRequest, Event, GetOrderRequest, OrderLine, OrderStatus, UpdateOrderStatusRequest,
};
use test_support::{LEGACY_EVENTS as FIXTURE, TestDb};
use tonic::Code;

use crate::support::{Server, run};

pub use crate::dead_letters::dead_letters_are_listed_replayed_once_and_purged;
pub use crate::event_log::{
    a_damaged_log_row_is_kept_aside_and_ingest_goes_on,
    cancelling_clients_never_loosen_the_backlog_bound, the_log_consumers_timings_are_exported,
};
pub use crate::kill::{
    accepted_events_survive_sigkill_under_every_policy,
    acknowledged_batches_survive_sigkill_exactly_once,
    acknowledged_batches_survive_sigkill_in_a_group_commit,
    acknowledged_batches_survive_sigkill_while_outputs_commit,
    acknowledged_batches_survive_sigkill_with_two_commits_on_their_way,
    acknowledged_orders_survive_sigkill_under_concurrent_writers,
};
pub use crate::pipeline::engine_writes_through_the_real_stores;
pub use crate::subscribe::{
    events_follow_prints_stored_then_new_events, retention_ages_events_out_while_ingest_goes_on,
    subscribers_on_two_replicas_see_one_sequence,
    subscribers_resume_across_a_kill_and_match_the_export,
};

pub fn create(user: &str, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        user_id: user.into(),
        lines: vec![
            OrderLine {
                product_id: "p-1".into(),
                quantity: 2,
                unit_price_cents: 1_250,
            },
            OrderLine {
                product_id: "p-2".into(),
                quantity: 1,
                unit_price_cents: 99,
            },
        ],
        currency: "EUR".into(),
        idempotency_key: key.into(),
    }
}

fn code_and_message<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.unwrap_err();
    (status.code(), status.message().to_owned())
}

pub fn event(n: usize) -> Event {
    Event {
        event_id: format!("e2e-{n}"),
        user_id: format!("u-{}", n % 7),
        action: if n.is_multiple_of(2) {
            "login".into()
        } else {
            "add_to_cart".into()
        },
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + n as i64,
            nanos: 0,
        }),
        amount_cents: Some(n as i64),
        attributes: [("channel".to_owned(), "web".to_owned())].into(),
    }
}

pub async fn a_panicking_handler_answers_internal_and_the_channel_keeps_serving(db: &TestDb) {
    let server = Server::start(db, &[("FAILPOINTS", "grpc-get-order=1*panic(boom)")]);
    let mut orders = server.orders().await;
    let order = orders
        .create_order(create("u", ""))
        .await
        .unwrap()
        .into_inner();
    let (code, message) = code_and_message(
        orders
            .get_order(GetOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await,
    );
    assert_eq!(code, Code::Internal);
    assert!(
        !message.contains("boom"),
        "panic text must not leak: {message}"
    );
    // The same channel keeps serving.
    let fetched = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.version, 1);
    let metrics = scrape(&server).await;
    assert!(
        metrics.lines().any(|l| l == "orderflow_panics_total 1"),
        "{metrics}"
    );
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("boom") && l.contains("GetOrder")),
        "panic logged with its RPC"
    );
}

pub async fn scrape(server: &Server) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(&server.metrics)
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.metrics
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

pub async fn health_is_serving_and_reflection_lists_the_services(db: &TestDb) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let server = Server::start(db, &[]);
    let mut health = HealthClient::new(server.channel().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for service in [
        "",
        "liveness",
        "readiness",
        "orderflow.v1.OrderService",
        "orderflow.v1.CatalogService",
        "orderflow.v1.EventService",
    ] {
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if status.status == 1 {
                break; // SERVING
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{service:?} never SERVING"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Reflection, both protocol versions, lists our services.
    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        server.channel().await,
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = v1
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = reply.message_response
    else {
        panic!("unexpected reflection reply")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "grpc.health.v1.Health",
        "orderflow.v1.OrderService",
        "orderflow.v1.CatalogService",
        "orderflow.v1.EventService",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }
    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            server.channel().await,
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = v1alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        replies.message().await.unwrap().is_some(),
        "v1alpha answers too"
    );
}

pub async fn sigterm_during_a_stream_keeps_every_acknowledged_event(db: &TestDb) {
    let server = Server::start(
        db,
        &[
            ("ORDERFLOW_OVERFLOW_POLICY", "block"),
            ("ORDERFLOW_SHUTDOWN_DELAY", "5s"),
        ],
    );
    let mut events = server.events().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let publish = tokio::spawn(async move {
        events
            .publish_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for n in 0..200 {
        tx.send(event(n)).await.unwrap();
    }
    // SIGTERM while the stream is open and events are still coming.
    server.signal_term();
    // Health turns NOT_SERVING while the server still answers (the delay;
    // wide enough that a busy CI machine still polls inside it, with each
    // check bounded so one slow answer cannot use up the window).
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut seen = Vec::new();
    loop {
        let check = tokio::time::timeout(
            Duration::from_millis(500),
            health.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        match check {
            Ok(Ok(reply)) if reply.get_ref().status == 2 => break,
            Ok(Ok(reply)) => seen.push(format!("status {}", reply.into_inner().status)),
            Ok(Err(status)) => seen.push(format!("{:?}", status.code())),
            Err(_) => seen.push("no answer within 500 ms".to_owned()),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never NOT_SERVING during shutdown; the checks saw (last 5): {:?}",
            &seen[seen.len().saturating_sub(5)..]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 200..400 {
        tx.send(event(n)).await.unwrap();
    }
    drop(tx); // the client finishes its stream; the in-flight RPC completes
    let counts = publish.await.unwrap().unwrap().into_inner();
    assert_eq!(
        counts.accepted, 400,
        "the open stream was served to its end"
    );
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    // Every acknowledged event is in the store (the default pipeline keeps
    // them all; nothing was dead-lettered).
    let (ok, stdout, stderr) = run(db, &["events", "export"], None);
    assert!(ok.success(), "{stderr}");
    assert_eq!(String::from_utf8(stdout).unwrap().lines().count(), 400);
}

pub async fn import_then_export_reproduces_the_fixture_byte_for_byte(db: &TestDb) {
    let (ok, _, stderr) = run(db, &["events", "import", "-"], Some(FIXTURE.as_bytes()));
    assert!(ok.success(), "{stderr}");
    let (ok, stdout, stderr) = run(db, &["events", "export"], None);
    assert!(ok.success(), "{stderr}");
    assert_eq!(String::from_utf8(stdout).unwrap(), FIXTURE);
    // A malformed line aborts with its number and stores nothing more.
    let bad = format!(
        "{}\n{{\"user_id\":\"\",\"action\":\"login\"}}\n",
        FIXTURE.lines().next().unwrap()
    );
    let (ok, _, stderr) = run(db, &["events", "import", "-"], Some(bad.as_bytes()));
    assert!(!ok.success());
    assert!(stderr.contains("line 2"), "{stderr}");
    let (_, stdout, _) = run(db, &["events", "export"], None);
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        FIXTURE,
        "the failed import stored nothing"
    );
}

/// `events export` only reads: no migrations, no write probe, so it works
/// on a database it cannot write. SQLite: the file made immutable
/// (`chattr +i`, which binds root too). PostgreSQL: a role that may only
/// read, whose transactions are read-only, as on a hot standby. Before, the
/// export migrated and probed writability first, and failed on both.
pub async fn export_only_reads(db: &TestDb) {
    let (ok, _, stderr) = run(db, &["events", "import", "-"], Some(FIXTURE.as_bytes()));
    assert!(ok.success(), "{stderr}");
    let (ok, stdout, stderr) = match db.postgres_schema() {
        None => {
            let path = db.url().to_owned();
            let Some(_frozen) = Immutable::new(&path) else {
                eprintln!("skipped: chattr +i is not supported here");
                return;
            };
            run(db, &["events", "export"], None)
        }
        Some(schema) => {
            let role = format!("reader_{}", rand::random::<u32>());
            db.execute_raw(&format!(
                "CREATE ROLE {role} LOGIN; \
                 GRANT USAGE ON SCHEMA {schema} TO {role}; \
                 GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}; \
                 ALTER ROLE {role} SET default_transaction_read_only = on;"
            ))
            .await
            .unwrap();
            let url = db.url().replacen("://postgres@", &format!("://{role}@"), 1);
            assert_ne!(url, db.url(), "the test URL names the postgres user");
            let result = crate::support::run_url(&url, &["events", "export"], None);
            db.execute_raw(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
                .await
                .unwrap();
            result
        }
    };
    assert!(ok.success(), "{stderr}");
    assert_eq!(String::from_utf8(stdout).unwrap(), FIXTURE);
}

/// A file made immutable (`chattr +i`) for as long as this lives.
struct Immutable(String);

impl Immutable {
    fn new(path: &str) -> Option<Self> {
        let done = std::process::Command::new("chattr")
            .args(["+i", path])
            .status()
            .is_ok_and(|s| s.success());
        done.then(|| Self(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .args(["-i", &self.0])
            .status();
    }
}

pub async fn metrics_pass_promtool(db: &TestDb) {
    let server = Server::start(db, &[]);
    let mut orders = server.orders().await;
    let order = orders
        .create_order(create("u", ""))
        .await
        .unwrap()
        .into_inner();
    orders
        .get_order(GetOrderRequest {
            order_id: order.order_id,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await; // a monitor tick publishes cache stats
    let body = scrape(&server).await;
    for name in [
        "orderflow_grpc_requests_total{",
        "orderflow_grpc_request_duration_seconds_bucket",
        "orderflow_cache_hits_total",
        "orderflow_cache_misses_total",
        "orderflow_events_received_total",
        "orderflow_queue_depth",
        "orderflow_build_info{version=",
        "orderflow_db_pool_connections ",
        "orderflow_db_pool_idle_connections ",
        "orderflow_db_pool_max_connections ",
        "orderflow_db_order_read_batches_total ",
        "orderflow_db_order_read_ids_total ",
        "orderflow_grpc_requests_in_flight",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var("ORDERFLOW_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "ORDERFLOW_REQUIRE_PROMTOOL=1 but promtool is not installed"
        );
        eprintln!("promtool not installed; install Debian's `prometheus` package to lint /metrics");
        return;
    };
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Acknowledged order writes are on disk, not in the process: a server
/// killed with SIGKILL right after answering, restarted on the same
/// database, serves every one of them at the version acknowledged.
pub async fn acknowledged_orders_survive_sigkill(db: &TestDb) {
    let server = Server::start(db, &[]);
    let mut orders = server.orders().await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let mut order = orders
            .create_order(create(&format!("u-kill-{n}"), ""))
            .await
            .unwrap()
            .into_inner();
        if n % 2 == 0 {
            order = orders
                .update_order_status(UpdateOrderStatusRequest {
                    order_id: order.order_id.clone(),
                    status: OrderStatus::Paid.into(),
                    expected_version: order.version,
                })
                .await
                .unwrap()
                .into_inner();
        }
        acknowledged.push(order);
    }
    drop(orders);
    server.kill();

    let restarted = Server::start(db, &[]);
    let mut orders = restarted.orders().await;
    for order in acknowledged {
        let read = orders
            .get_order(GetOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read, order);
    }
}

/// `ORDERFLOW_EVENT_SINK=blackhole`: acknowledged events are processed and
/// counted, and nothing reaches the event store.
pub async fn the_blackhole_sink_counts_and_discards(db: &TestDb) {
    let server = Server::start(db, &[("ORDERFLOW_EVENT_SINK", "blackhole")]);
    let mut events = server.events().await;
    let ack = events
        .publish_event_batch(orderflow_proto::proto::EventBatch {
            producer_id: "bh".into(),
            sequence: 1,
            events: (0..40).map(event).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 40);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
        if stats.processed == 40 {
            assert_eq!(stats.log_backlog, 0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.terminate().success());
    let (status, stdout, stderr) = run(db, &["events", "export"], None);
    assert!(status.success(), "{stderr}");
    assert!(stdout.is_empty(), "the blackhole stored events");
}

/// `orderflow migrate --status`, a deploy gate: on a migrated database it
/// lists every migration applied and exits 0; with the newest one's record
/// gone that one is listed pending and the exit is non-zero, however often
/// it is asked (asking applies nothing).
pub async fn migrate_status_lists_pending_migrations_and_gates(db: &TestDb) {
    let status = |expect_ok: bool| {
        let (status, stdout, stderr) = run(db, &["migrate", "--status"], None);
        assert_eq!(status.success(), expect_ok, "{stderr}");
        (String::from_utf8(stdout).unwrap(), stderr)
    };
    let (listed, _) = status(true);
    let applied: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("applied  "))
        .collect();
    assert!(applied.len() >= 10, "{listed}");
    assert!(
        listed.ends_with(&format!("{} applied, 0 pending\n", applied.len())),
        "{listed}"
    );
    let newest = *applied.last().unwrap();

    db.execute_raw(
        "DELETE FROM __diesel_schema_migrations \
         WHERE version = (SELECT max(version) FROM __diesel_schema_migrations)",
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let (listed, stderr) = status(false);
        assert!(listed.contains(&format!("pending  {newest}\n")), "{listed}");
        assert!(listed.ends_with(", 1 pending\n"), "{listed}");
        assert!(stderr.contains("1 migration(s) pending"), "{stderr}");
        assert!(stderr.contains("orderflow migrate"), "{stderr}");
    }
}
