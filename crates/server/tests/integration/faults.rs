//! Faults injected into a running process: what one slow or failing part
//! may and may not take down with it.

use std::time::Duration;

use grpc_api::proto::GetOrderRequest;
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
            let mut orders =
                grpc_api::proto::order_service_client::OrderServiceClient::new(channel.clone());
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
