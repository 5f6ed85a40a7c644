//! Least privilege, black-box on the real binary: every RPC against every
//! kind of credential (none, unknown, each scope alone, all scopes, and
//! JWTs good and bad), key rotation by editing the JWK set file, per-
//! principal rate limits, mutual-TLS principals, and the audit trail (with
//! no credential in any log line at any level).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use grpc_api::auth::Scope;
use orderflow_proto::proto::{
    EventBatch, GetOrderRequest, GetPrimaryWarehouseRequest, GetProductRequest, ListOrdersRequest,
    OrderStatus, Product, SubscribeEventsRequest, UpdateOrderStatusRequest, Warehouse,
};
use orderflow_proto::{Client, Reason};
use serde_json::json;
use test_support::TestDb;
use test_support::jwt::{KEY_A, KEY_B, jwk_set, now, unsigned};
use tonic::{Code, Status};

use crate::suite::{create, event};
use crate::support::Server;

const UNKNOWN_ORDER: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "orderflow";

/// Each RPC with a scope, the scope, and what it answers a caller allowed
/// to make it (the requests are made so each answer is known).
const TABLE: [(&str, Scope, Code); 13] = [
    ("CreateOrder", Scope::OrdersWrite, Code::Ok),
    ("GetOrder", Scope::OrdersRead, Code::NotFound),
    ("ListOrders", Scope::OrdersRead, Code::Ok),
    ("UpdateOrderStatus", Scope::OrdersWrite, Code::NotFound),
    ("UpsertProduct", Scope::CatalogWrite, Code::Ok),
    ("GetProduct", Scope::CatalogRead, Code::NotFound),
    ("GetPrimaryWarehouse", Scope::CatalogRead, Code::NotFound),
    ("PublishEvents", Scope::EventsPublish, Code::Ok),
    ("PublishEvent", Scope::EventsPublish, Code::Ok),
    ("GetPipelineStats", Scope::EventsRead, Code::Ok),
    ("PublishEventBatch", Scope::EventsPublish, Code::Ok),
    ("StreamEventBatches", Scope::EventsPublish, Code::Ok),
    ("SubscribeEvents", Scope::EventsRead, Code::Ok),
];

/// Calls `method` once; `Ok` when it answered OK.
async fn call(client: &Client, method: &str) -> Result<(), Status> {
    let work = async {
        match method {
            "CreateOrder" => client
                .orders()
                .create_order(create("u-auth", ""))
                .await
                .map(drop),
            "GetOrder" => client
                .orders()
                .get_order(GetOrderRequest {
                    order_id: UNKNOWN_ORDER.into(),
                })
                .await
                .map(drop),
            "ListOrders" => client
                .orders()
                .list_orders(ListOrdersRequest {
                    user_id: "u-auth".into(),
                    page_size: 10,
                    page_token: String::new(),
                })
                .await
                .map(drop),
            "UpdateOrderStatus" => client
                .orders()
                .update_order_status(UpdateOrderStatusRequest {
                    order_id: UNKNOWN_ORDER.into(),
                    status: OrderStatus::Paid.into(),
                    expected_version: 1,
                })
                .await
                .map(drop),
            "UpsertProduct" => client
                .catalog()
                .upsert_product(Product {
                    product_id: "p-auth".into(),
                    sku: "SKU-AUTH".into(),
                    name: "auth".into(),
                    warehouses: vec![Warehouse {
                        warehouse_id: "w-1".into(),
                        name: "one".into(),
                        is_primary: true,
                    }],
                })
                .await
                .map(drop),
            "GetProduct" => client
                .catalog()
                .get_product(GetProductRequest {
                    product_id: "p-missing".into(),
                })
                .await
                .map(drop),
            "GetPrimaryWarehouse" => client
                .catalog()
                .get_primary_warehouse(GetPrimaryWarehouseRequest {
                    product_id: "p-missing".into(),
                })
                .await
                .map(drop),
            "PublishEvents" => client
                .events()
                .publish_events(tokio_stream::iter(vec![event(1)]))
                .await
                .map(drop),
            "PublishEvent" => client.events().publish_event(event(2)).await.map(drop),
            "GetPipelineStats" => client.events().get_pipeline_stats(()).await.map(drop),
            "PublishEventBatch" => client
                .events()
                .publish_event_batch(anonymous_batch())
                .await
                .map(drop),
            "StreamEventBatches" => {
                let mut acks = client
                    .events()
                    .stream_event_batches(tokio_stream::iter(vec![anonymous_batch()]))
                    .await?
                    .into_inner();
                acks.message().await.map(drop)
            }
            "SubscribeEvents" => client
                .events()
                .subscribe_events(SubscribeEventsRequest {
                    after_position: 0,
                    actions: vec![],
                    max_page: 0,
                })
                .await
                .map(drop),
            other => panic!("no call for {other}"),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| panic!("{method} did not answer in 10 s"))
}

fn anonymous_batch() -> EventBatch {
    EventBatch {
        producer_id: String::new(),
        sequence: 1,
        events: vec![event(3)],
    }
}

/// What a case expects of the RPC needing a scope, which answers a code
/// when allowed.
type Rule = Box<dyn Fn(Scope, Code) -> Expect>;

/// What a case expects of one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Through to the handler: its answer.
    Answer(Code),
    /// UNAUTHENTICATED.
    Unauthenticated,
    /// PERMISSION_DENIED, `MISSING_SCOPE`, naming the scope.
    MissingScope(Scope),
}

fn check(method: &str, case: &str, result: Result<(), Status>, expect: Expect) {
    match (expect, result) {
        (Expect::Answer(Code::Ok), Ok(())) => {}
        (Expect::Answer(code), Err(status)) if status.code() == code => {}
        (Expect::Unauthenticated, Err(status)) if status.code() == Code::Unauthenticated => {
            assert_eq!(
                orderflow_proto::reason(&status),
                Some(Reason::Unauthenticated),
                "{case} / {method}: {status:?}"
            );
        }
        (Expect::MissingScope(scope), Err(status)) if status.code() == Code::PermissionDenied => {
            assert_eq!(
                orderflow_proto::reason(&status),
                Some(Reason::MissingScope),
                "{case} / {method}"
            );
            let info = orderflow_proto::details(&status)
                .error_info()
                .cloned()
                .unwrap();
            assert_eq!(
                info.metadata.get("scope").map(String::as_str),
                Some(scope.as_str())
            );
            assert!(
                status
                    .message()
                    .contains(&format!("lacks scope \"{scope}\"")),
                "{case} / {method}: {}",
                status.message()
            );
        }
        (expect, result) => panic!("{case} / {method}: expected {expect:?}, got {result:?}"),
    }
}

/// A fresh bearer token, as `README` says to mint one.
fn mint() -> String {
    format!("ofk_{:032x}", rand::random::<u128>())
}

fn hex_sha256(token: &str) -> String {
    grpc_api::auth::digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A server with principals (one per scope, one with every scope, and any
/// `extra` TOML), a JWK set of `keys`, and its files.
struct Setup {
    dir: tempfile::TempDir,
    server: Server,
    tokens: HashMap<String, String>,
}

impl Setup {
    async fn start(
        db: &TestDb,
        keys: &[test_support::jwt::TestKey],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = HashMap::new();
        let mut toml = String::new();
        let mut principal = |name: String, scopes: &[Scope], rest: &str| {
            let token = mint();
            let list: Vec<String> = scopes.iter().map(|s| format!("{:?}", s.as_str())).collect();
            toml.push_str(&format!(
                "[[principals]]\nname = {name:?}\ntoken_sha256 = {:?}\nscopes = [{}]\n{rest}\n",
                hex_sha256(&token),
                list.join(", ")
            ));
            tokens.insert(name, token);
        };
        for &scope in Scope::ALL {
            principal(format!("only-{}", scope.as_str()), &[scope], "");
        }
        principal("everything".into(), Scope::ALL, "");
        principal("hammer".into(), &[Scope::EventsRead], "rate = \"10/s\"");
        principal("calm".into(), &[Scope::EventsRead], "rate = \"1000/s\"");
        toml.push_str(extra);
        std::fs::write(dir.path().join("credentials.toml"), &toml).unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwk_set(keys)).unwrap();
        let credentials = dir.path().join("credentials.toml").display().to_string();
        let jwks = dir.path().join("jwks.json").display().to_string();
        let mut settings = vec![
            ("ORDERFLOW_CREDENTIALS", credentials.as_str()),
            ("ORDERFLOW_JWT_JWKS", jwks.as_str()),
            ("ORDERFLOW_JWT_ISSUER", ISSUER),
            ("ORDERFLOW_JWT_AUDIENCE", AUDIENCE),
            // Every level: no credential may reach any log line.
            ("RUST_LOG", "trace"),
        ];
        settings.extend_from_slice(env);
        let server = Server::start(db, &settings);
        Self {
            dir,
            server,
            tokens,
        }
    }

    async fn client(&self, token: Option<&str>) -> Client {
        let mut builder = Client::builder(self.server.address.clone());
        if let Some(token) = token {
            builder = builder.bearer_token(token);
        }
        builder.connect().await.unwrap()
    }

    fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }

    fn jwks_path(&self) -> std::path::PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// No log line holds any token, or the first 12 characters of one.
    fn assert_no_credential_logged(&self, extra: &[&str]) {
        let logs = self.server.logs();
        assert!(logs.len() > 100, "trace logs were written: {}", logs.len());
        let secrets = self
            .tokens
            .values()
            .map(String::as_str)
            .chain(extra.iter().copied());
        for secret in secrets {
            let prefix = &secret[..12];
            if let Some(line) = logs.iter().find(|l| l.contains(prefix)) {
                panic!("a credential's prefix {prefix:?} is in a log line: {line}");
            }
        }
    }
}

fn claims(sub: &str, scope: &str) -> serde_json::Value {
    json!({"sub": sub, "scope": scope, "iss": ISSUER, "aud": AUDIENCE,
           "exp": now() + 600, "nbf": now() - 5, "iat": now()})
}

fn all_scopes() -> String {
    Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every RPC, against every kind of credential, answers exactly as the
/// contract says: health and reflection need none; no credential, an
/// unknown token and every bad JWT are UNAUTHENTICATED; a principal without
/// the RPC's scope is PERMISSION_DENIED `MISSING_SCOPE` naming it; one with
/// it reaches the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_credential_as_the_contract_says() {
    let db = TestDb::sqlite().await;
    let setup = Setup::start(&db, &[KEY_A], "", &[]).await;

    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("jwt-user", &all_scopes());
        change(&mut c);
        KEY_A.sign(&c)
    };
    let bad_jwts = [
        ("JWT expired", with(&|c| c["exp"] = json!(now() - 3600))),
        (
            "JWT not yet valid",
            with(&|c| c["nbf"] = json!(now() + 3600)),
        ),
        (
            "JWT of another issuer",
            with(&|c| c["iss"] = json!("https://other.test")),
        ),
        (
            "JWT for another audience",
            with(&|c| c["aud"] = json!("billing")),
        ),
        (
            "JWT signed by another key",
            KEY_B.sign_as(KEY_A.kid, &claims("jwt-user", &all_scopes())),
        ),
        (
            "JWT with alg none",
            unsigned(KEY_A.kid, &claims("jwt-user", &all_scopes())),
        ),
        (
            "JWT HS256 with the public key as secret",
            KEY_A.forge_hs256(&claims("jwt-user", &all_scopes())),
        ),
    ];
    let mut cases: Vec<(String, Option<String>, Rule)> = vec![
        (
            "no credential".into(),
            None,
            Box::new(|_, _| Expect::Unauthenticated),
        ),
        (
            "unknown token".into(),
            Some(mint()),
            Box::new(|_, _| Expect::Unauthenticated),
        ),
        (
            "all scopes".into(),
            Some(setup.token("everything").to_owned()),
            Box::new(|_, allowed| Expect::Answer(allowed)),
        ),
        (
            "JWT with all scopes".into(),
            Some(KEY_A.sign(&claims("jwt-user", &all_scopes()))),
            Box::new(|_, allowed| Expect::Answer(allowed)),
        ),
    ];
    for &only in Scope::ALL {
        let expect = move |needed: Scope, allowed| {
            if needed == only {
                Expect::Answer(allowed)
            } else {
                Expect::MissingScope(needed)
            }
        };
        cases.push((
            format!("token with only {only}"),
            Some(setup.token(&format!("only-{}", only.as_str())).to_owned()),
            Box::new(expect),
        ));
        cases.push((
            format!("JWT with only {only}"),
            Some(KEY_A.sign(&claims("jwt-one", only.as_str()))),
            Box::new(expect),
        ));
    }
    for (case, token) in &bad_jwts {
        cases.push((
            (*case).to_owned(),
            Some(token.clone()),
            Box::new(|_, _| Expect::Unauthenticated),
        ));
    }

    for (case, token, expect) in &cases {
        let client = setup.client(token.as_deref()).await;
        for (method, scope, allowed) in TABLE {
            check(
                method,
                case,
                call(&client, method).await,
                expect(scope, allowed),
            );
        }
        // Health and reflection: open to every caller.
        let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel());
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("{case} / health: {s:?}"));
        reflect(&client)
            .await
            .unwrap_or_else(|s| panic!("{case} / reflection: {s:?}"));
    }

    // The JWT cache: each good token's signature was checked once, though
    // each was sent on 13 calls.
    let metrics = crate::suite::scrape(&setup.server).await;
    let verified = crate::event_log::metric(&metrics, "orderflow_jwt_verifications_total");
    let good = 1 + Scope::ALL.len();
    assert_eq!(verified, Some((good + bad_jwts.len() * TABLE.len()) as f64));

    let bad: Vec<&str> = bad_jwts.iter().map(|(_, t)| t.as_str()).collect();
    setup.assert_no_credential_logged(&bad);
}

async fn reflect(client: &Client) -> Result<(), Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(client.channel())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    replies.message().await.map(drop)
}

/// Keys rotate by editing the JWK set file, without a restart: a token of
/// a new key is accepted within a second of the file naming it; once the
/// old key is removed its tokens are refused; a file that does not parse
/// keeps the keys in force. Throughout, a subscription opened with the old
/// key's token keeps its authorization (a call is checked when it starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart_and_open_streams_keep_their_authorization() {
    let db = TestDb::sqlite().await;
    let setup = Setup::start(&db, &[KEY_A], "", &[]).await;
    let scopes = "events:read events:publish";
    let old = setup
        .client(Some(&KEY_A.sign(&claims("follower", scopes))))
        .await;
    let new = setup
        .client(Some(&KEY_B.sign(&claims("producer", scopes))))
        .await;
    let stats = |client: &Client| {
        let mut events = client.events();
        async move { events.get_pipeline_stats(()).await.map(drop) }
    };
    stats(&old).await.unwrap();
    assert_eq!(stats(&new).await.unwrap_err().code(), Code::Unauthenticated);

    // A subscription opened under the old key.
    let mut following = old
        .events()
        .subscribe_events(SubscribeEventsRequest {
            after_position: 0,
            actions: vec![],
            max_page: 0,
        })
        .await
        .unwrap()
        .into_inner();

    // Add the new key: accepted within a second.
    let written = Instant::now();
    std::fs::write(setup.jwks_path(), jwk_set(&[KEY_A, KEY_B])).unwrap();
    while stats(&new).await.is_err() {
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "the new key was not accepted within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted_after = written.elapsed();

    // A file that does not parse: the keys in force stay, and it says so.
    std::fs::write(setup.jwks_path(), "{ not json").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !setup
        .server
        .logs()
        .iter()
        .any(|l| l.contains("credentials not reloaded"))
    {
        assert!(Instant::now() < deadline, "no error for a broken JWK set");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats(&new).await.unwrap();
    stats(&old).await.unwrap();

    // Remove the old key: its tokens are refused within a second.
    let written = Instant::now();
    std::fs::write(setup.jwks_path(), jwk_set(&[KEY_B])).unwrap();
    while stats(&old).await.is_ok() {
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "the old key was not refused within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats(&old).await.unwrap_err().code(), Code::Unauthenticated);

    // The subscription opened under the old key still delivers: an event
    // published under the new key reaches it.
    new.events().publish_event(event(42)).await.unwrap();
    let page = tokio::time::timeout(Duration::from_secs(10), following.message())
        .await
        .expect("the open subscription delivers")
        .unwrap()
        .unwrap();
    assert_eq!(
        page.events[0].event.as_ref().unwrap().event_id,
        event(42).event_id
    );
    eprintln!("new key accepted {accepted_after:?} after the file changed");
}

/// One principal past its rate gets RATE_LIMITED with RetryInfo, and only
/// it: another principal calling at the same time is never limited, and
/// health is never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_past_its_rate_is_limited_and_no_other_is() {
    let db = TestDb::sqlite().await;
    let setup = Setup::start(&db, &[KEY_A], "", &[]).await;
    let hammer = setup.client(Some(setup.token("hammer"))).await;
    let calm = setup.client(Some(setup.token("calm"))).await;
    let hammering = tokio::spawn({
        let hammer = hammer.clone();
        async move {
            let mut outcomes = Vec::new();
            for _ in 0..100 {
                outcomes.push(hammer.events().get_pipeline_stats(()).await.map(drop));
            }
            outcomes
        }
    });
    let mut calm_outcomes = Vec::new();
    for _ in 0..50 {
        calm_outcomes.push(calm.events().get_pipeline_stats(()).await.map(drop));
    }
    let outcomes = hammering.await.unwrap();
    assert!(calm_outcomes.iter().all(Result::is_ok), "{calm_outcomes:?}");
    let limited: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        limited.len() >= 50,
        "only {} of 100 calls at 10/s were limited",
        limited.len()
    );
    assert!(
        outcomes.iter().filter(|o| o.is_ok()).count() >= 10,
        "the first ten fit"
    );
    for status in &limited {
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(orderflow_proto::reason(status), Some(Reason::RateLimited));
        let details = orderflow_proto::details(status);
        let retry = details.retry_info().and_then(|r| r.retry_delay).unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(100),
            "{retry:?}"
        );
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(hammer.channel());
    for _ in 0..30 {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    // After the delay RetryInfo gave, the hammer fits again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    hammer.events().get_pipeline_stats(()).await.unwrap();
}

/// Each mutation writes one JSON audit line naming its principal, method,
/// code and what it touched, refused ones included; reads write none; and
/// no line at any level holds a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mutation_writes_one_audit_line_and_no_log_holds_a_credential() {
    let db = TestDb::sqlite().await;
    // Pretty logs: the audit trail is JSON whatever the log format.
    let setup = Setup::start(&db, &[KEY_A], "", &[("ORDERFLOW_LOG_FORMAT", "pretty")]).await;
    let writer = setup.client(Some(setup.token("only-orders:write"))).await;
    let reader = setup.client(Some(setup.token("only-orders:read"))).await;
    let producer = KEY_A.sign(&claims("jwt-producer", "events:publish"));
    let publisher = setup.client(Some(&producer)).await;

    let order = writer
        .orders()
        .create_order(create("u-audit", "k-1"))
        .await
        .unwrap()
        .into_inner();
    writer
        .orders()
        .update_order_status(UpdateOrderStatusRequest {
            order_id: order.order_id.clone(),
            status: OrderStatus::Paid.into(),
            expected_version: order.version,
        })
        .await
        .unwrap();
    let refused = reader
        .orders()
        .create_order(create("u-audit", "k-2"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    reader
        .orders()
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap();
    publisher
        .events()
        .publish_event_batch(EventBatch {
            producer_id: "audited-producer".into(),
            sequence: 7,
            events: vec![event(7), event(8)],
        })
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let audit = loop {
        let lines: Vec<serde_json::Value> = setup
            .server
            .logs()
            .iter()
            .filter(|l| l.contains("\"target\":\"audit\""))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.len() >= 4 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        audit.len(),
        4,
        "one line per mutation, none for the read: {audit:#?}"
    );
    let find = |method: &str, code: &str| {
        audit
            .iter()
            .find(|l| l["method"] == method && l["code"] == code)
            .unwrap_or_else(|| panic!("no {method} {code} line: {audit:#?}"))
    };
    let created = find("CreateOrder", "OK");
    assert_eq!(created["principal"], "only-orders:write");
    assert_eq!(created["order_id"], order.order_id.as_str());
    let updated = find("UpdateOrderStatus", "OK");
    assert_eq!(updated["order_id"], order.order_id.as_str());
    assert_eq!(
        find("CreateOrder", "PERMISSION_DENIED")["principal"],
        "only-orders:read"
    );
    let batch = find("PublishEventBatch", "OK");
    assert_eq!(batch["principal"], "jwt-producer");
    assert_eq!(batch["producer_id"], "audited-producer");
    assert_eq!(batch["first_sequence"], 7);
    assert_eq!(batch["events"], 2);

    setup.assert_no_credential_logged(&[&producer]);
}

/// Under mutual TLS, a client certificate whose SAN names a principal is
/// that principal's credential; one naming none is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_its_principal_under_mutual_tls() {
    let files = crate::tls::Files::new();
    let clients = test_support::TestCa::new("clients");
    std::fs::write(files.dir.path().join("clients.pem"), clients.cert_pem()).unwrap();
    let db = TestDb::sqlite().await;
    let (cert, key, client_ca) = (
        files.path("server.crt"),
        files.path("server.key"),
        files.path("clients.pem"),
    );
    let extra = "[[principals]]\nname = \"reporting\"\ncert_san = \"reporting.clients.test\"\nscopes = [\"orders:read\"]\n";
    let setup = Setup::start(
        &db,
        &[KEY_A],
        extra,
        &[
            ("ORDERFLOW_TLS_CERT", &cert),
            ("ORDERFLOW_TLS_KEY", &key),
            ("ORDERFLOW_TLS_CLIENT_CA", &client_ca),
        ],
    )
    .await;
    let https = format!("https://localhost:{}", crate::tls::port(&setup.server));
    let connect = |issued: test_support::Issued| {
        let tls = crate::tls::trusting(&files.ca.cert_pem()).identity(
            tonic::transport::Identity::from_pem(issued.cert_pem, issued.key_pem),
        );
        Client::builder(https.clone()).tls(tls).connect()
    };
    let reporting = connect(clients.client("reporting.clients.test"))
        .await
        .unwrap();
    check(
        "GetOrder",
        "SAN reporting",
        call(&reporting, "GetOrder").await,
        Expect::Answer(Code::NotFound),
    );
    check(
        "CreateOrder",
        "SAN reporting",
        call(&reporting, "CreateOrder").await,
        Expect::MissingScope(Scope::OrdersWrite),
    );
    let stranger = connect(clients.client("stranger.clients.test"))
        .await
        .unwrap();
    check(
        "GetOrder",
        "SAN stranger",
        call(&stranger, "GetOrder").await,
        Expect::Unauthenticated,
    );
}

/// The credentials file reloads as the JWK set does: a principal added to
/// it can call within a second; a version with a mistake keeps the one in
/// force and logs the error naming the entry; SIGHUP reloads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_file_reloads_on_change_and_on_sighup() {
    let db = TestDb::sqlite().await;
    let setup = Setup::start(&db, &[KEY_A], "", &[]).await;
    let path = setup.dir.path().join("credentials.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let newcomer = mint();
    let client = setup.client(Some(&newcomer)).await;
    let stats = || {
        let mut events = client.events();
        async move { events.get_pipeline_stats(()).await.map(drop) }
    };
    assert_eq!(stats().await.unwrap_err().code(), Code::Unauthenticated);

    let written = Instant::now();
    std::fs::write(
        &path,
        format!(
            "{original}[[principals]]\nname = \"newcomer\"\ntoken_sha256 = \"{}\"\nscopes = [\"events:read\"]\n",
            hex_sha256(&newcomer)
        ),
    )
    .unwrap();
    while stats().await.is_err() {
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "the new principal was not accepted within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A mistake: the whole file is refused, and the set in force stays.
    let broken = std::fs::read_to_string(&path)
        .unwrap()
        .replace("events:read\"]\n", "events:raed\"]\n");
    std::fs::write(&path, broken).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let error = loop {
        if let Some(line) = setup
            .server
            .logs()
            .into_iter()
            .find(|l| l.contains("credentials not reloaded"))
        {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no error for a broken credentials file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        error.contains("ORDERFLOW_CREDENTIALS") && error.contains("events:raed"),
        "{error}"
    );
    stats().await.unwrap();

    // SIGHUP reloads even with nothing changed, and says so.
    std::fs::write(&path, &original).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !setup
        .server
        .logs()
        .iter()
        .any(|l| l.contains("credentials reloaded") && l.contains("SIGHUP"))
    {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stats().await.unwrap_err().code(),
        Code::Unauthenticated,
        "the newcomer is gone again"
    );
    // The connection that was refused, allowed, and refused again is the
    // same one throughout: a reload drops none.
}

/// `orderflow events follow` sends `ORDERFLOW_CLIENT_TOKEN`: with a JWT
/// holding `events:read` it prints the stored events; without a credential
/// it ends at once, non-zero, saying why, instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_sends_the_client_token() {
    use std::io::BufRead as _;
    let db = TestDb::sqlite().await;
    let setup = Setup::start(&db, &[KEY_A], "", &[]).await;
    let publisher = setup.client(Some(setup.token("only-events:publish"))).await;
    publisher.events().publish_event(event(77)).await.unwrap();
    let follow = |token: Option<&str>| {
        let mut command = std::process::Command::new(crate::support::binary());
        command
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("RUST_LOG", "warn")
            .args(["events", "follow", "--server", &setup.server.address])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(token) = token {
            command.env("ORDERFLOW_CLIENT_TOKEN", token);
        }
        command.spawn().unwrap()
    };

    let reader = KEY_A.sign(&claims("follower", "events:read"));
    let mut following = follow(Some(&reader));
    let stdout = following.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let line = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the stored event");
    let _ = following.kill();
    let _ = following.wait();
    assert!(line.contains(&event(77).event_id), "{line}");

    let refused = follow(None).wait_with_output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no credential"), "{stderr}");
}
