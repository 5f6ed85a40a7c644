//! Faults injected into a running process: what one slow or failing part
//! may and may not take down with it.

use std::time::Duration;

use orderflow_proto::proto::GetOrderRequest;
use test_support::TestDb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::Server;

/// `storage-find-order=sleep(N)` simulates a slow database: lookups wait,
/// and nothing else does. (The `fail` crate's sleep blocks its thread; with
/// two runtime workers, a few lookups used to freeze the whole server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_failpoint_delays_only_its_own_requests() {
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[("FAILPOINTS", "storage-find-order=sleep(4000)")]);
    let channel = server.channel().await;
    // More sleeping lookups than the server has runtime workers, on ids no
    // cache holds (distinct, so none are coalesced).
    let lookups: Vec<_> = (0..6)
        .map(|n| {
            let mut orders = orderflow_proto::proto::order_service_client::OrderServiceClient::new(
                channel.clone(),
            );
            tokio::spawn(async move {
                orders
                    .get_order(GetOrderRequest {
                        order_id: format!("00000000-0000-7000-8000-{n:012}"),
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile the server answers everything else.
    let mut health = HealthClient::new(channel.clone());
    let serving = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");
    let mut orders = server.orders().await;
    orders
        .create_order(crate::suite::create("u", ""))
        .await
        .unwrap();
    assert!(
        lookups.iter().all(|l| !l.is_finished()),
        "the lookups are still sleeping while other requests were answered"
    );
    for lookup in lookups {
        let answer = lookup.await.unwrap();
        assert_eq!(
            answer.unwrap_err().code(),
            tonic::Code::NotFound,
            "each lookup finishes after its sleep"
        );
    }
}

/// The server's `host:port`.
fn socket(server: &Server) -> &str {
    server.address.trim_start_matches("http://")
}

/// The HTTP/2 client preface and an empty SETTINGS frame: enough for the
/// server to consider the connection started.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads until the peer closes; `Err` if it is still open after `limit` (a
/// guard against hanging, not a measurement).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Result<(), ()> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| ())
}

/// A connection that never speaks is closed after the handshake timeout;
/// one that speaks and then has no RPC in progress, after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let db = TestDb::sqlite().await;
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_HANDSHAKE_TIMEOUT", "300ms"),
            ("ORDERFLOW_IDLE_CONNECTION_TIMEOUT", "1s"),
        ],
    );
    let mut silent = tokio::net::TcpStream::connect(socket(&server))
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(20))
            .await
            .is_ok(),
        "a silent connection is closed"
    );
    let mut idle = tokio::net::TcpStream::connect(socket(&server))
        .await
        .unwrap();
    idle.write_all(PREFACE).await.unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(20))
            .await
            .is_ok(),
        "an idle connection is closed"
    );
    // A connection with an RPC in progress is not idle: a stream open
    // longer than the idle timeout still completes.
    let mut events = server.events().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let stream = tokio::spawn(async move {
        events
            .publish_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(crate::suite::event(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tx.send(crate::suite::event(2)).await.unwrap();
    drop(tx);
    assert_eq!(stream.await.unwrap().unwrap().into_inner().accepted, 2);
}

/// At the connection limit the server stops accepting: a further client
/// hears nothing until an open connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[("ORDERFLOW_MAX_CONNECTIONS", "3")]);
    // The server's first frame on a connection is its SETTINGS.
    async fn answered(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(within, stream.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
    }
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(socket(&server))
            .await
            .unwrap();
        stream.write_all(PREFACE).await.unwrap();
        assert!(answered(&mut stream, Duration::from_secs(10)).await);
        open.push(stream);
    }
    let mut fourth = tokio::net::TcpStream::connect(socket(&server))
        .await
        .unwrap();
    fourth.write_all(PREFACE).await.unwrap();
    assert!(
        !answered(&mut fourth, Duration::from_secs(1)).await,
        "not accepted while three are open"
    );
    drop(open.pop());
    assert!(
        answered(&mut fourth, Duration::from_secs(10)).await,
        "accepted once one closed"
    );
}

/// 1,000 metadata entries: RESOURCE_EXHAUSTED saying how large, not HTTP
/// 431 (which a gRPC client can only report as UNKNOWN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_is_resource_exhausted() {
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[]);
    let mut orders = server.orders().await;
    let mut request = tonic::Request::new(GetOrderRequest {
        order_id: "00000000-0000-7000-8000-000000000000".into(),
    });
    for i in 0..1000 {
        let key: tonic::metadata::MetadataKey<_> = format!("x-header-{i}").parse().unwrap();
        request.metadata_mut().insert(key, "value".parse().unwrap());
    }
    let status = orders.get_order(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("metadata"), "{status:?}");
    assert_eq!(
        orderflow_proto::reason(&status),
        Some(orderflow_proto::Reason::MetadataTooLarge),
        "{status:?}"
    );
    // The connection is fine afterwards.
    let status = orders
        .get_order(GetOrderRequest {
            order_id: "00000000-0000-7000-8000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

/// Panics in 1% of GetOrder calls under concurrent load: each answers
/// INTERNAL and is counted; every other call succeeds on the same
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_panics_under_load_leave_every_other_call_ok() {
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[("FAILPOINTS", "grpc-get-order=1%panic(boom)")]);
    let mut orders = server.orders().await;
    let order = orders
        .create_order(crate::suite::create("u", ""))
        .await
        .unwrap()
        .into_inner();
    let channel = server.channel().await;
    let calls_per_client = 250;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let mut orders = orderflow_proto::proto::order_service_client::OrderServiceClient::new(
                channel.clone(),
            );
            let id = order.order_id.clone();
            tokio::spawn(async move {
                let mut panicked = 0u64;
                for _ in 0..calls_per_client {
                    match orders
                        .get_order(GetOrderRequest {
                            order_id: id.clone(),
                        })
                        .await
                    {
                        Ok(found) => assert_eq!(found.into_inner().order_id, id),
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
                            panicked += 1;
                        }
                    }
                }
                panicked
            })
        })
        .collect();
    let mut panicked = 0;
    for client in clients {
        panicked += client.await.unwrap();
    }
    assert!(panicked > 0, "the failpoint fired");
    assert!(
        panicked < 8 * calls_per_client / 10,
        "about 1% panicked, not {panicked}"
    );
    let metrics = crate::suite::scrape(&server).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("orderflow_panics_total {panicked}")),
        "every panic is counted: {panicked}"
    );
}

/// With pretty logs and nothing reading spans, requests get no span, and a
/// line logged while serving one still names the RPC; lines logged outside
/// requests name none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_log_lines_name_the_rpc_they_were_logged_in() {
    let db = TestDb::sqlite().await;
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_LOG_FORMAT", "pretty"),
            ("FAILPOINTS", "grpc-get-order=1*panic(boom)"),
        ],
    );
    let mut orders = server.orders().await;
    let status = orders
        .get_order(GetOrderRequest {
            order_id: "00000000-0000-7000-8000-000000000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    let mut panicked = None;
    for _ in 0..100 {
        panicked = server
            .logs()
            .into_iter()
            .find(|line| line.contains("an RPC handler panicked"));
        if panicked.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let panicked = panicked.expect("the panic was logged");
    assert!(
        panicked.ends_with(" rpc=orderflow.v1.OrderService/GetOrder"),
        "{panicked}"
    );
    let logs = server.logs();
    let serving = logs.iter().find(|l| l.contains("serving gRPC")).unwrap();
    assert!(!serving.contains("rpc="), "{serving}");
}

/// `orderflow_grpc_requests_total` counts requests that a layer answered
/// before any handler ran, each under its code: UNAUTHENTICATED (auth),
/// DEADLINE_EXCEEDED (deadline), RESOURCE_EXHAUSTED (shed), INTERNAL (a
/// panic), beside those the handlers answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_under_its_code() {
    let db = TestDb::sqlite().await;
    let server = Server::start(
        &db,
        &[
            ("ORDERFLOW_AUTH_TOKEN", "secret"),
            ("ORDERFLOW_MAX_CONCURRENT_REQUESTS", "1"),
            (
                "FAILPOINTS",
                "grpc-get-order=1*panic(boom);storage-find-order=sleep(1500)",
            ),
        ],
    );
    let missing = || GetOrderRequest {
        order_id: "00000000-0000-7000-8000-000000000001".into(),
    };
    let mut orders = server.orders().await;
    // INTERNAL: the first GetOrder panics.
    let status = orders.get_order(missing()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    // UNAUTHENTICATED: a write without the token.
    let status = orders
        .create_order(crate::suite::create("u", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // DEADLINE_EXCEEDED: a lookup that sleeps past the caller's deadline.
    let mut request = tonic::Request::new(missing());
    request
        .metadata_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let status = orders.get_order(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    // RESOURCE_EXHAUSTED: the only unary permit is held by a slow lookup.
    let mut slow = server.orders().await;
    let held = tokio::spawn(async move { slow.get_order(missing()).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = orders
        .get_order(GetOrderRequest {
            order_id: "00000000-0000-7000-8000-000000000002".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        held.await.unwrap().unwrap_err().code(),
        tonic::Code::NotFound
    );

    let metrics = crate::suite::scrape(&server).await;
    let count = |method: &str, code: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("orderflow_grpc_requests_total{")
                    && l.contains("service=\"orderflow.v1.OrderService\"")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("code=\"{code}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        count("GetOrder", "INTERNAL").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        count("CreateOrder", "UNAUTHENTICATED").as_deref(),
        Some("1")
    );
    assert_eq!(count("GetOrder", "DEADLINE_EXCEEDED").as_deref(), Some("1"));
    assert_eq!(
        count("GetOrder", "RESOURCE_EXHAUSTED").as_deref(),
        Some("1")
    );
    assert_eq!(count("GetOrder", "NOT_FOUND").as_deref(), Some("1"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("# HELP orderflow_grpc_requests_in_flight")),
        "the in-flight gauge is described"
    );
}

/// An open `Health/Watch` does not hold shutdown for the grace period: on
/// SIGTERM it hears NOT_SERVING, then ends, and the process exits once the
/// in-flight work is done (here: at once, well inside a 30 s grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_health_watch_does_not_hold_shutdown() {
    let db = TestDb::sqlite().await;
    let server = Server::start(&db, &[("ORDERFLOW_SHUTDOWN_GRACE", "30s")]);
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    loop {
        let update = watch.message().await.unwrap().unwrap();
        if update.status == 1 {
            break; // SERVING
        }
    }
    let signalled = std::time::Instant::now();
    server.signal_term();
    let mut saw_not_serving = false;
    loop {
        match watch.message().await {
            Ok(Some(update)) => saw_not_serving |= update.status == 2,
            Ok(None) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                break;
            }
        }
    }
    assert!(
        saw_not_serving,
        "the watch heard NOT_SERVING before it ended"
    );
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "exited {:?} after SIGTERM; the 30 s grace was not waited out",
        signalled.elapsed()
    );
}

/// With the event log's backlog at its bound (the consumer held inside each
/// commit by a failpoint, for less than the stall watchdog's timeout; on
/// PostgreSQL appends go on meanwhile),
/// PublishEvent sheds by the overflow policy: `drop-newest` and
/// `dead-letter` answer RESOURCE_EXHAUSTED `EVENT_DROPPED` and
/// `EVENT_DEAD_LETTERED`, `block-timeout` the same as `drop-newest` once its
/// wait is over, and `block` waits for room, then answers accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_log_backlog_sheds_publish_event_by_policy() {
    use orderflow_proto::Reason;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let event = |policy: &str, n: usize| orderflow_proto::proto::Event {
        event_id: format!("full-{policy}-{n}"),
        user_id: "u-full".into(),
        action: "login".into(),
        ..Default::default()
    };
    // The smallest bound the server takes (one whole batch).
    const BOUND: u64 = 10_000;
    for (policy, shed_as) in [
        ("drop-newest", Some(Reason::EventDropped)),
        ("dead-letter", Some(Reason::EventDeadLettered)),
        ("block-timeout:300ms", Some(Reason::EventDropped)),
        ("block", None),
    ] {
        let server = Server::start(
            &db,
            &[
                ("ORDERFLOW_OVERFLOW_POLICY", policy),
                ("ORDERFLOW_LOG_MAX_BACKLOG", &BOUND.to_string()),
                ("FAILPOINTS", "storage-log-commit=sleep(4000)"),
            ],
        );
        let mut events = server.events().await;
        // Fill the bound (events past the room left are shed by the policy,
        // or wait for it), while each commit of the consumer is held 4 s.
        loop {
            let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
            if stats.log_backlog >= BOUND {
                break;
            }
            let room = usize::try_from(BOUND - stats.log_backlog).unwrap();
            let fill: Vec<_> = (0..room).map(|n| event(policy, 100_000 + n)).collect();
            let counts = tokio::time::timeout(
                Duration::from_secs(30),
                events.publish_events(tokio_stream::iter(fill)),
            )
            .await
            .expect("the fill is answered")
            .unwrap()
            .into_inner();
            assert!(counts.accepted > 0, "{policy}: {counts:?}");
        }
        let before = events.get_pipeline_stats(()).await.unwrap().into_inner();
        let began = std::time::Instant::now();
        let answer = events.publish_event(event(policy, 10)).await;
        let waited = began.elapsed();
        match shed_as {
            Some(reason) => {
                let status = answer.expect_err(policy);
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{policy}");
                assert_eq!(orderflow_proto::reason(&status), Some(reason), "{policy}");
                if policy.starts_with("block-timeout") {
                    assert!(waited >= Duration::from_millis(300), "{policy}: {waited:?}");
                }
            }
            None => assert!(answer.unwrap().get_ref().accepted, "{policy}"),
        }
        let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
        let expected = match shed_as {
            Some(Reason::EventDropped) => (before.dropped + 1, before.dead_lettered),
            Some(_) => (before.dropped, before.dead_lettered + 1),
            None => (before.dropped, before.dead_lettered),
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            // A dead letter is counted once the dead-letter worker has
            // stored it.
            let mut stats = stats;
            while (stats.dropped, stats.dead_lettered) != expected {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
            }
        })
        .await;
        let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
        assert_eq!(
            (stats.dropped, stats.dead_lettered),
            expected,
            "{policy}: {stats:?}"
        );
    }
}
