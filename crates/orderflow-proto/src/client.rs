//! A connected client: one HTTP/2 channel, the bearer token added to every
//! request, and a typed client per service sharing the channel.

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::follow::Follow;
use crate::proto::catalog_service_client::CatalogServiceClient;
use crate::proto::event_service_client::EventServiceClient;
use crate::proto::order_service_client::OrderServiceClient;

/// Why a [`Client`] could not be built or connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        source: tonic::transport::Error,
    },
    /// The token cannot be sent as metadata (it holds characters outside
    /// visible ASCII).
    #[error("the bearer token is not valid metadata (visible ASCII only)")]
    InvalidToken,
    /// The server could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
}

/// Adds `authorization: Bearer <token>` to each request (nothing without a
/// token).
#[derive(Debug, Clone, Default)]
pub struct Authenticated {
    header: Option<AsciiMetadataValue>,
}

impl Interceptor for Authenticated {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// `orderflow.v1.OrderService` on a [`Client`]'s channel.
pub type OrderClient = OrderServiceClient<InterceptedService<Channel, Authenticated>>;
/// `orderflow.v1.CatalogService` on a [`Client`]'s channel.
pub type CatalogClient = CatalogServiceClient<InterceptedService<Channel, Authenticated>>;
/// `orderflow.v1.EventService` on a [`Client`]'s channel.
pub type EventClient = EventServiceClient<InterceptedService<Channel, Authenticated>>;

/// A connection to one orderflow server. Cheap to clone; clones share the
/// channel.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    auth: Authenticated,
}

impl Client {
    /// Settings for a client of the server at `endpoint`
    /// (`http://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            timeout: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects to `endpoint` with the default settings and no token.
    ///
    /// # Errors
    /// When the endpoint is invalid or cannot be reached.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(endpoint).connect().await
    }

    /// `orderflow.v1.OrderService`.
    #[must_use]
    pub fn orders(&self) -> OrderClient {
        OrderServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `orderflow.v1.CatalogService`.
    #[must_use]
    pub fn catalog(&self) -> CatalogClient {
        CatalogServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `orderflow.v1.EventService`.
    #[must_use]
    pub fn events(&self) -> EventClient {
        EventServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// The stored events after position `after` (0: from the oldest kept),
    /// then live, resuming by itself after a broken stream: see [`Follow`].
    #[must_use]
    pub fn follow(&self, after: u64) -> Follow {
        Follow::new(self.events(), after)
    }

    /// The underlying channel, for other services on the same server (health,
    /// reflection).
    #[must_use]
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// How to reach a server: see [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    endpoint: String,
    token: Option<String>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ClientBuilder {
    /// Sends `authorization: Bearer <token>` with every request: the
    /// server's `ORDERFLOW_AUTH_TOKEN`, a principal's token, or a JWT (a
    /// JWT is sent as it is; the server verifies it once and then
    /// remembers it until it expires).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A deadline for every request (sent as `grpc-timeout`; none by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// TLS settings: the CA to trust, a client certificate for mutual TLS,
    /// the name to check. Without them, an `https://` endpoint is checked
    /// against the system's roots.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    fn endpoint(&self) -> Result<(Endpoint, Authenticated), ClientError> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|source| ClientError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                source,
            })?
            .connect_timeout(self.connect_timeout);
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        #[cfg(feature = "tls")]
        {
            let tls = match &self.tls {
                Some(config) => Some(config.clone()),
                None if self.endpoint.starts_with("https://") => {
                    Some(tonic::transport::ClientTlsConfig::new().with_native_roots())
                }
                None => None,
            };
            if let Some(tls) = tls {
                endpoint =
                    endpoint
                        .tls_config(tls)
                        .map_err(|source| ClientError::InvalidEndpoint {
                            endpoint: self.endpoint.clone(),
                            source,
                        })?;
            }
        }
        let header = match &self.token {
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| ClientError::InvalidToken)?,
            ),
            None => None,
        };
        Ok((endpoint, Authenticated { header }))
    }

    /// Connects now.
    ///
    /// # Errors
    /// When the settings are invalid or the server cannot be reached.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let (endpoint, auth) = self.endpoint()?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        Ok(Client { channel, auth })
    }

    /// A client that connects on its first request (and reconnects after a
    /// failure).
    ///
    /// # Errors
    /// When the settings are invalid.
    pub fn connect_lazy(self) -> Result<Client, ClientError> {
        let (endpoint, auth) = self.endpoint()?;
        Ok(Client {
            channel: endpoint.connect_lazy(),
            auth,
        })
    }
}
