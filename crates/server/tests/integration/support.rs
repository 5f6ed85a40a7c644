//! Starting the real binary against a throw-away database, and clients.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orderflow_proto::{Client, EventClient, OrderClient};
use test_support::TestDb;
use tonic::transport::Channel;

pub const BINARY: &str = env!("CARGO_BIN_EXE_orderflow");

/// The binary [`Server::start`] and [`run`] start: this build's, or
/// `ORDERFLOW_TEST_BINARY` (to show that a test fails on another build, such
/// as the one before a fix).
pub fn binary() -> String {
    std::env::var("ORDERFLOW_TEST_BINARY").unwrap_or_else(|_| BINARY.to_owned())
}

/// A running `orderflow` process.
pub struct Server {
    child: Child,
    pub address: String,
    pub metrics: String,
    logs: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the binary on `db` with extra environment, and waits until it
    /// serves.
    pub fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        Self::start_url(db.url(), env)
    }

    /// Starts the binary on the database at `url`.
    pub fn start_url(url: &str, env: &[(&str, &str)]) -> Self {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("DATABASE_URL", url)
            .env("ORDERFLOW_LISTEN", "127.0.0.1:0")
            .env("ORDERFLOW_METRICS_LISTEN", &metrics)
            .env("ORDERFLOW_LOG_FORMAT", "json")
            .env("ORDERFLOW_HEALTH_INTERVAL", "200ms")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("serving gRPC") {
                        // A JSON line by default; `address=…` in a pretty one.
                        let address = match serde_json::from_str::<serde_json::Value>(&line) {
                            Ok(value) => value["fields"]["address"].as_str().map(str::to_owned),
                            Err(_) => line
                                .split_whitespace()
                                .find_map(|word| word.strip_prefix("address="))
                                .map(str::to_owned),
                        };
                        let _ = found.send(address.unwrap());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let address = match address.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => panic!("server did not start; logs: {:#?}", logs.lock().unwrap()),
        };
        Self {
            child,
            address: format!("http://{address}"),
            metrics,
            logs,
        }
    }

    /// A client of the client crate, as users connect.
    pub async fn client(&self) -> Client {
        Client::connect(self.address.clone()).await.unwrap()
    }

    pub async fn channel(&self) -> Channel {
        self.client().await.channel()
    }

    pub async fn orders(&self) -> OrderClient {
        self.client().await.orders()
    }

    pub async fn events(&self) -> EventClient {
        self.client().await.events()
    }

    /// The process id, for reading its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`HUP`, `TERM`) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait()
    }

    /// Waits (up to 30 s) for the process to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args` on `db`; returns (status, stdout, stderr).
pub fn run(
    db: &TestDb,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (std::process::ExitStatus, Vec<u8>, String) {
    run_url(db.url(), args, stdin)
}

/// [`run`] on the database at `url`.
pub fn run_url(
    url: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (std::process::ExitStatus, Vec<u8>, String) {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .env_clear()
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How many times each event id is in `events export` of `db`.
pub fn stored_event_ids(db: &TestDb) -> std::collections::HashMap<String, usize> {
    let (status, stdout, stderr) = run(db, &["events", "export"], None);
    assert!(status.success(), "{stderr}");
    let mut seen = std::collections::HashMap::new();
    for line in String::from_utf8(stdout).unwrap().lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        *seen
            .entry(value["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    seen
}

/// Runs `work` to completion on a runtime of its own, on a thread of its
/// own: for clean-up in `Drop`, which runs inside a test's runtime.
pub fn on_own_runtime<F: std::future::Future<Output = ()> + Send + 'static>(work: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work);
    })
    .join()
    .unwrap();
}

/// Waits until the pipeline has processed everything it took (no log
/// backlog, received = processed), for at most `within`; the stats then.
pub async fn drained(
    events: &mut EventClient,
    within: Duration,
) -> orderflow_proto::proto::PipelineStats {
    let deadline = Instant::now() + within;
    loop {
        let stats = events.get_pipeline_stats(()).await.unwrap().into_inner();
        if stats.log_backlog == 0 && stats.received == stats.processed {
            return stats;
        }
        assert!(Instant::now() < deadline, "never drained: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The event ids `events export` prints for the database at `url`, in its
/// order.
pub fn exported_ids_url(url: &str) -> Vec<String> {
    let (status, stdout, stderr) = run_url(url, &["events", "export"], None);
    assert!(status.success(), "{stderr}");
    String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}
