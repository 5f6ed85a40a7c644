//! Accepted connections under limits: at most `max` open at once, each
//! closed if it does not start talking within the handshake timeout, or
//! if it has had no RPC in progress for the idle timeout.
//!
//! tonic bounds streams per connection and pings peers (HTTP/2 keepalive,
//! set in `serve/wiring.rs`), but it accepts connections without limit and keeps
//! a silent or idle one for ever: thousands of them exhaust file
//! descriptors. The count lives in a semaphore permit each [`Connection`]
//! holds; activity is counted by [`ActivityLayer`], which finds the
//! connection's state in the request's extensions (tonic puts each
//! connection's [`Connected::ConnectInfo`] there).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// The limits [`incoming`] applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time from accept to the first bytes received.
    pub handshake_timeout: Duration,
    /// Time with no RPC in progress before the connection is closed.
    pub idle_timeout: Duration,
}

/// Accepts from `listener` under `limits`. At the connection limit it stops
/// accepting until a connection closes; accept errors (out of file
/// descriptors) are logged and retried after a pause.
pub fn incoming(listener: TcpListener, limits: Limits) -> ReceiverStream<io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((stream, remote)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "could not set TCP_NODELAY");
                    }
                    let connection = Connection::new(stream, remote, permit, limits);
                    if tx.send(Ok(connection)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// What RPCs a connection has in progress, shared between the connection
/// and the requests on it.
#[derive(Debug)]
pub struct Activity {
    in_progress: AtomicUsize,
    /// Wakes the connection when its last RPC ends, to start the idle clock.
    waker: AtomicWaker,
}

impl Activity {
    fn started(&self) {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
    }

    fn ended(&self) {
        if self.in_progress.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.waker.wake();
        }
    }
}

/// A connection's information for requests: tonic's (the peer's address,
/// for `Request::remote_addr`) and its [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The TCP addresses.
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

/// An accepted connection; see the module documentation.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    info: ConnectionInfo,
    _permit: OwnedSemaphorePermit,
    limits: Limits,
    /// Before the first bytes: the handshake deadline; after: the idle one.
    deadline: Pin<Box<Sleep>>,
    talking: bool,
    /// Whether RPCs were in progress when last looked at.
    busy: bool,
}

impl Connection {
    fn new(
        stream: TcpStream,
        remote: SocketAddr,
        permit: OwnedSemaphorePermit,
        limits: Limits,
    ) -> Self {
        let info = ConnectionInfo {
            tcp: TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(remote),
            },
            activity: Arc::new(Activity {
                in_progress: AtomicUsize::new(0),
                waker: AtomicWaker::new(),
            }),
        };
        Self {
            stream,
            info,
            _permit: permit,
            limits,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            talking: false,
            busy: false,
        }
    }

    /// Whether the connection has outlived its handshake or idle deadline;
    /// re-arms the deadline as activity changes.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let activity = &self.info.activity;
        activity.waker.register(cx.waker());
        let busy = activity.in_progress.load(Ordering::SeqCst) > 0;
        if busy {
            self.busy = true;
            return false;
        }
        if self.busy {
            // The last RPC just ended: the idle clock starts now.
            self.busy = false;
            self.deadline
                .as_mut()
                .reset(Instant::now() + self.limits.idle_timeout);
        }
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !this.talking && buf.filled().len() > before {
                    this.talking = true;
                    // Idle from now until the first RPC arrives.
                    this.deadline
                        .as_mut()
                        .reset(Instant::now() + this.limits.idle_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if this.expired(cx) => {
                let what = if this.talking { "idle" } else { "silent" };
                tracing::debug!(remote = ?this.info.tcp.remote_addr, what, "closing a connection");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} connection closed"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts each RPC as in progress on its connection from the request until
/// its response body is finished (see [`Connection`]'s idle timeout).
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivityLayer;

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = ActivityService<S>;
    fn layer(&self, inner: S) -> ActivityService<S> {
        ActivityService { inner }
    }
}

/// The service [`ActivityLayer`] makes.
#[derive(Debug, Clone)]
pub struct ActivityService<S> {
    inner: S,
}

/// Marks an RPC ended when dropped.
#[derive(Debug)]
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.ended();
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for ActivityService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Over TLS, tonic wraps the connection's information, with the
        // client's certificates under mutual TLS: handed on to the auth
        // layer, which knows nothing of this crate's types.
        let tls = request.extensions().get::<TlsConnectInfo<ConnectionInfo>>();
        let peer = tls.and_then(TlsConnectInfo::peer_certs);
        let info = request
            .extensions()
            .get::<ConnectionInfo>()
            .or_else(|| tls.map(TlsConnectInfo::get_ref));
        let guard = info.map(|info| {
            info.activity.started();
            InProgress(Arc::clone(&info.activity))
        });
        if let Some(chain) = peer {
            request
                .extensions_mut()
                .insert(grpc_api::auth::PeerCertificates(chain));
        }
        let work = self.inner.call(request);
        Box::pin(async move {
            let response = work.await?;
            Ok(match guard {
                Some(guard) => {
                    response.map(|body| tonic::body::Body::new(grpc_api::Guarded::new(body, guard)))
                }
                None => response,
            })
        })
    }
}
