//! PostgreSQL outage, end to end: a TCP proxy between the server and
//! PostgreSQL that the test cuts and restores (how crates.io tests an
//! unhealthy database). During the outage health is NOT_SERVING, RPCs that
//! need the database answer UNAVAILABLE within their budget, and cache hits
//! still succeed; after it, SERVING again without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use grpc_api::proto::{CreateOrderRequest, GetOrderRequest, OrderLine};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use test_support::TestDb;

use crate::support::Server;

/// Forwards connections to PostgreSQL while `up`; when cut, closes every
/// open connection and refuses new ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, watcher) = tokio::sync::watch::channel(0u64);
        let target = target.to_owned();
        let accepting = Arc::clone(&up);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let mut cut = watcher.clone();
                // Only a cut after this connection opened closes it.
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn health(client: &mut HealthClient<tonic::transport::Channel>) -> i32 {
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn wait_for(client: &mut HealthClient<tonic::transport::Channel>, want: i32, stage: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(client).await != want {
        assert!(
            Instant::now() < deadline,
            "{stage}: health never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_not_serving_unavailable_and_recovers() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432").await;
    // The same database and schema, reached through the proxy.
    let through = db
        .url()
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(
        through,
        db.url(),
        "the test database must be on 127.0.0.1:5432"
    );
    let server = Server::start_url(&through, &[("ORDERFLOW_DB_TIMEOUT", "1s")]);
    let mut health_client = HealthClient::new(server.channel().await);
    wait_for(&mut health_client, 1, "start").await;

    let mut orders = server.orders().await;
    let order = orders
        .create_order(CreateOrderRequest {
            user_id: "u".into(),
            lines: vec![OrderLine {
                product_id: "p".into(),
                quantity: 1,
                unit_price_cents: 5,
            }],
            currency: "EUR".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    proxy.cut();
    wait_for(&mut health_client, 2, "outage").await; // NOT_SERVING
    // A cache hit still answers.
    let cached = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(cached.into_inner().order_id, order.order_id);
    // A miss needs the database: UNAVAILABLE within the budget.
    let started = Instant::now();
    let missing = orders
        .get_order(GetOrderRequest {
            order_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unavailable, "{missing:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    proxy.restore();
    wait_for(&mut health_client, 1, "recovery").await; // SERVING again, same process
    orders
        .get_order(GetOrderRequest {
            order_id: order.order_id,
        })
        .await
        .unwrap();
}
