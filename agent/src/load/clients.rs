//! The HTTP clients a point uses: reqwest for probes (`/health`, `/v1/models`, `/tokenize`,
//! `/metrics`, extension probes), and [`StreamClient`] for the measured streams.
//!
//! Measured streams go through hyper-util's pooled client directly for one setting reqwest
//! does not expose: the cap on each connection's read buffer. hyper reads a response into
//! a per-connection buffer that doubles whenever a read fills it, up to about 400 KiB. A
//! fast engine's chunks queue in the socket between two polls of a busy client, so every
//! read fills the buffer and every connection ends at the cap: 1,000 flowing streams held
//! 566–657 MB of peak RSS (`loadbench fast --streams 1000`), against 132 MB for 4,096
//! slow ones. Capped at [`READ_BUF_MAX`], a read still takes a few hundred SSE events at
//! once and the buffers of 1,000 streams stay under 35 MB.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::AgentError;
use crate::metrics::{InFlight, RequestCounters};

/// Largest read buffer of one streaming connection (hyper's minimum is 8 KiB; it also
/// bounds a response head, and engines send heads of a few hundred bytes).
pub const READ_BUF_MAX: usize = 32 * 1024;

/// Connecting to the engine gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Both clients, sharing nothing but their settings: connections kept for reuse (idle ones
/// for the agent's `http_idle_timeout_ms`), no proxy (engines are local), no overall
/// timeout (points set deadlines).
#[derive(Clone, Debug)]
pub struct HttpClients {
    pub probes: reqwest::Client,
    pub streams: StreamClient,
}

impl HttpClients {
    /// A request given a pooled connection that the server closed before the request was
    /// written is resent on a fresh one by hyper's pool itself (both clients);
    /// [`crate::load::retry`] covers the rest.
    pub fn new(idle: Duration) -> Result<Self, AgentError> {
        let probes = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(idle)
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(HttpClients {
            probes,
            streams: StreamClient::new(idle),
        })
    }

    /// Measured requests counted in `requests` (the agent's metrics).
    pub fn counting(mut self, requests: RequestCounters) -> Self {
        self.streams.requests = requests;
        self
    }
}

/// Keep every warmed-up connection: a burst of thousands reuses them instead of paying
/// thousands of TCP handshakes inside its measured requests.
const MAX_IDLE_PER_HOST: usize = 65_536;

/// The measured streams' client: plain HTTP/1.1 (engines are local; no TLS, as with the
/// probes), pooled, read buffers capped at [`READ_BUF_MAX`].
#[derive(Clone, Debug)]
pub struct StreamClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    /// Requests in flight and finished, for the agent's metrics.
    requests: RequestCounters,
}

/// A send's failure: hyper-util's error (connect, a closed pooled connection, …).
pub type SendError = hyper_util::client::legacy::Error;

impl StreamClient {
    /// Idle connections are dropped after `idle`, before the server drops them: a server
    /// that closes an idle connection while a request is being written to it fails that
    /// request.
    pub fn new(idle: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUF_MAX)
            .build(connector);
        StreamClient {
            inner,
            requests: RequestCounters::default(),
        }
    }

    /// A measured request leaves: counted in flight until the guard ends.
    pub fn in_flight(&self) -> InFlight {
        self.requests.start()
    }

    /// POSTs `body` as JSON to `uri` with an `x-request-id` header (engines that log
    /// request ids can be matched with the records; vLLM takes it with
    /// `--enable-request-id-headers`, vllm-sim's trace keys on it); resolves with the
    /// response head.
    pub async fn post_json(
        &self,
        uri: &http::Uri,
        request_id: http::HeaderValue,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, SendError> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        request
            .headers_mut()
            .insert(http::HeaderName::from_static("x-request-id"), request_id);
        self.inner.request(request).await
    }
}

/// The next data bytes of a response body: `None` at its end; trailers are skipped.
pub async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}
