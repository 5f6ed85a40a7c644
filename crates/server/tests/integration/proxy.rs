//! A TCP proxy in front of PostgreSQL that a test turns into each way a
//! database goes wrong: cut (every connection closed, new ones refused),
//! black-holed (connections stay open and nothing gets through, as when a
//! network drops packets; held bytes go through once restored, as TCP
//! retransmission would deliver them), or slowed (each chunk delayed).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Up,
    /// Close every connection; refuse new ones.
    Cut,
    /// Accept, forward nothing, close nothing.
    Blackhole,
    /// Forward each chunk after this delay.
    Slow(Duration),
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(watch::Sender::new(Mode::Up));
        let target = target.to_owned();
        let modes = Arc::clone(&mode);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *modes.borrow() == Mode::Cut {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let mode = modes.subscribe();
                tokio::spawn(async move {
                    let mut waiting = mode.clone();
                    // A black-holed connection is held before it reaches
                    // the database.
                    if waiting
                        .wait_for(|m| matches!(m, Mode::Up | Mode::Slow(_) | Mode::Cut))
                        .await
                        .map(|m| *m == Mode::Cut)
                        .unwrap_or(true)
                    {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, mode.clone()) => {}
                        () = pump(server_read, client_write, mode) => {}
                    }
                });
            }
        });
        Self { port, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` (a database on 127.0.0.1:5432) through this proxy.
    pub fn url(&self, url: &str) -> String {
        let through = url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port), 1);
        assert_ne!(through, url, "the test database must be on 127.0.0.1:5432");
        through
    }
}

/// Copies chunks from `from` to `to` as the mode says, until either side
/// closes or the proxy is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == Mode::Cut) => return,
        };
        let current = *mode.borrow_and_update();
        match current {
            Mode::Cut => return,
            Mode::Slow(delay) => tokio::time::sleep(delay).await,
            Mode::Blackhole => match mode.wait_for(|m| *m != Mode::Blackhole).await {
                Ok(m) if *m == Mode::Cut => return,
                Ok(_) => {}
                Err(_) => return,
            },
            Mode::Up => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
