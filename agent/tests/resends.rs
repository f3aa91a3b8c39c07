//! Resends (`load::retry`): a measured load request is resent at most
//! [`MAX_LOAD_RESENDS`] times, and only when it never reached the server (no connection, or
//! the connection closed or reset before any byte of a response); the record counts the
//! resends in `retries`. A request that got a response byte is never resent. Probes sent
//! through [`send_idempotent`] get 4 tries, [`PROBE_BACKOFF`] apart, after any transport
//! error but a timeout.
//!
//! A raw-TCP server plays one script per accepted connection (the last script repeats) and
//! counts connections and complete requests. Clock: tokio's paused clock, as in
//! `stream_faults.rs` (server and client share one runtime, so the backoff waits are exact
//! and cost no wall time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetbench_agent::load::request::{
    ApiEndpoint, Extensions, RequestContext, RequestPlan, measure,
};
use fleetbench_agent::load::retry::{MAX_LOAD_RESENDS, PROBE_BACKOFF, send_idempotent};
use fleetbench_proto::record::{ErrorKind, RequestRecord};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// The scripted server

/// One step of what the server does on one connection.
#[derive(Debug, Clone)]
enum Step {
    /// Read one whole request (head, then `content-length` bytes); counted in `requests`.
    Read,
    /// Write these bytes as they are.
    Raw(Vec<u8>),
    /// A streaming 200 response head (`transfer-encoding: chunked`).
    Head,
    /// The bytes as one HTTP chunk.
    Chunk(Vec<u8>),
    /// The terminating 0-chunk.
    End,
    /// Wait this many milliseconds.
    Sleep(u64),
    /// Keep the socket open and silent, for ever.
    Stall,
}
use Step::{Chunk, End, Head, Raw, Read, Sleep, Stall};

struct Server {
    base: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    /// Listens on 127.0.0.1:0; connection `i` plays `scripts[i]`, or the last script once
    /// they run out. A script ends by dropping the socket.
    async fn start(scripts: Vec<Vec<Step>>) -> Self {
        assert!(!scripts.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let i = conns.fetch_add(1, Ordering::SeqCst);
                let script = scripts[i.min(scripts.len() - 1)].clone();
                tokio::spawn(play(sock, script, reqs.clone()));
            }
        });
        Server {
            base,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn play(mut sock: TcpStream, script: Vec<Step>, requests: Arc<AtomicUsize>) {
    sock.set_nodelay(true).unwrap();
    for step in script {
        let written = match step {
            Read => {
                if !read_request(&mut sock).await {
                    return;
                }
                requests.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Raw(bytes) => sock.write_all(&bytes).await,
            Head => {
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                )
                .await
            }
            Chunk(bytes) => {
                let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
                frame.extend_from_slice(&bytes);
                frame.extend_from_slice(b"\r\n");
                sock.write_all(&frame).await
            }
            End => sock.write_all(b"0\r\n\r\n").await,
            Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            Stall => std::future::pending().await,
        };
        if written.is_err() {
            return;
        }
    }
}

/// Reads one request: the head up to the blank line, then `content-length` bytes of body.
/// False when the client closed first.
async fn read_request(sock: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    true
}

/// Accepts and drops the socket without reading the request or answering.
fn close_unread() -> Vec<Step> {
    vec![]
}

/// Reads the whole request, then drops the socket without a byte of a response.
fn read_then_close() -> Vec<Step> {
    vec![Read]
}

// ---------------------------------------------------------------------------------------
// SSE events

fn event(payload: &serde_json::Value) -> Vec<u8> {
    format!("data: {payload}\n\n").into_bytes()
}

fn content(text: &str, finish_reason: Option<&str>) -> Vec<u8> {
    event(&json!({
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish_reason}],
    }))
}

/// A proper streaming answer: 3 content chunks 10 ms apart, usage, [DONE], end of body.
fn streaming_answer() -> Vec<Step> {
    vec![
        Read,
        Head,
        Chunk(event(
            &json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        )),
        Sleep(10),
        Chunk(content("a", None)),
        Sleep(10),
        Chunk(content("b", None)),
        Sleep(10),
        Chunk(content("c", Some("length"))),
        Chunk(event(
            &json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
        )),
        Chunk(b"data: [DONE]\n\n".to_vec()),
        End,
    ]
}

// ---------------------------------------------------------------------------------------
// Measuring

const IDLE: Duration = Duration::from_millis(300);
const FAR: Duration = Duration::from_secs(3600);

fn plan() -> RequestPlan {
    RequestPlan {
        index: 3,
        wave: 0,
        endpoint: ApiEndpoint::Chat,
        model: "m".into(),
        prompt: "hello".into(),
        messages: None,
        target_input_tokens: 5,
        target_output_tokens: 3,
        scheduled_offset: Duration::ZERO,
        extensions: Extensions::ALL,
    }
}

/// Measures one request against `base`, with a 300 ms idle timeout and no deadline in
/// sight; also returns the (virtual) time it took.
async fn measure_at(base: &str) -> (RequestRecord, Duration) {
    let client = fleetbench_agent::http_clients().unwrap().streams;
    let now = Instant::now();
    let ctx = RequestContext {
        origin: now,
        deadline: now + FAR,
        idle_timeout: IDLE,
    };
    let r = measure(&client, base, &plan(), &ctx, &CancellationToken::new()).await;
    (r, now.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---------------------------------------------------------------------------------------
// Load requests

#[test]
fn limits_are_the_documented_ones() {
    assert_eq!(MAX_LOAD_RESENDS, 2);
    assert_eq!(
        PROBE_BACKOFF.map(ms),
        [50.0, 100.0, 200.0],
        "4 probe tries, 50/100/200 ms apart"
    );
}

/// (1) The first connection is closed before the request is read: resent once on a fresh
/// connection, which answers; the record counts the resend.
#[tokio::test(start_paused = true)]
async fn connection_closed_unread_is_resent_once_then_succeeds() {
    let server = Server::start(vec![close_unread(), streaming_answer()]).await;
    let (r, took) = measure_at(&server.base).await;
    assert_eq!(r.error_kind, None, "{}: {r:?}", r.error);
    assert_eq!(r.retries, 1);
    assert_eq!(server.connections(), 2);
    assert_eq!(server.requests(), 1, "only the resend was read");
    assert_eq!(r.content_chunks, 3);
    assert_eq!(r.output_tokens, Some(3));
    // One 50 ms backoff, then 30 ms of stream. TTFT and E2EL are measured from the first
    // try, so they include the backoff wait (current behaviour).
    assert_eq!(took, Duration::from_millis(80));
    assert!(close(r.ttft_s.unwrap(), 0.06), "{:?}", r.ttft_s);
    assert!(close(r.e2el_s.unwrap(), 0.08), "{:?}", r.e2el_s);
    assert!(r.itl_s.iter().all(|g| close(*g, 0.01)), "{:?}", r.itl_s);
}

/// (1b) The same when the server read the whole request before closing without a byte of
/// an answer: the client cannot tell the two apart, and both count as never reached.
#[tokio::test(start_paused = true)]
async fn connection_closed_after_reading_without_answer_is_resent() {
    let server = Server::start(vec![read_then_close(), streaming_answer()]).await;
    let (r, took) = measure_at(&server.base).await;
    assert_eq!(r.error_kind, None, "{}: {r:?}", r.error);
    assert_eq!(r.retries, 1);
    assert_eq!((server.connections(), server.requests()), (2, 2));
    assert_eq!(took, Duration::from_millis(80));
}

/// (2) A server that always closes before answering: 3 tries (2 resends, 50 then 100 ms
/// apart), then the request fails as `connect` with both resends in its record.
#[tokio::test(start_paused = true)]
async fn server_that_always_closes_fails_after_three_tries() {
    for script in [close_unread(), read_then_close()] {
        let server = Server::start(vec![script.clone()]).await;
        let (r, took) = measure_at(&server.base).await;
        assert_eq!(r.error_kind, Some(ErrorKind::Connect), "{script:?}: {r:?}");
        assert!(!r.error.is_empty());
        assert_eq!(r.retries, MAX_LOAD_RESENDS, "{script:?}");
        assert_eq!(server.connections(), 3, "{script:?}");
        assert_eq!(took, Duration::from_millis(150), "{script:?}");
        assert_eq!((r.ttft_s, r.content_chunks), (None, 0));
    }
}

/// (2b) Nothing listening: no connection can be made, resent twice, then `connect`.
#[tokio::test(start_paused = true)]
async fn connection_refused_is_resent_twice_then_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (r, took) = measure_at(&base).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Connect), "{r:?}");
    assert_eq!(r.retries, 2);
    assert_eq!(took, Duration::from_millis(150));
}

/// (3) Response head and one chunk, then the connection drops: truncated, never resent.
#[tokio::test(start_paused = true)]
async fn response_cut_after_a_chunk_is_truncated_and_not_resent() {
    let server = Server::start(vec![
        vec![Read, Head, Chunk(content("a", None))],
        streaming_answer(),
    ])
    .await;
    let (r, _) = measure_at(&server.base).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Truncated), "{r:?}");
    assert_eq!(r.retries, 0);
    assert_eq!((server.connections(), server.requests()), (1, 1));
    assert_eq!(r.content_chunks, 1);
    assert_eq!(r.ttft_s, Some(0.0));
}

/// (3b) The response head alone, then the connection drops: a response arrived, so it is
/// truncated and not resent.
#[tokio::test(start_paused = true)]
async fn response_cut_after_the_head_is_truncated_and_not_resent() {
    let server = Server::start(vec![vec![Read, Head], streaming_answer()]).await;
    let (r, _) = measure_at(&server.base).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Truncated), "{r:?}");
    assert_eq!(r.retries, 0);
    assert_eq!((server.connections(), server.requests()), (1, 1));
    assert_eq!(r.content_chunks, 0);
}

/// (3c) An error status is an answer: recorded as `http-status`, not resent.
#[tokio::test(start_paused = true)]
async fn error_status_is_not_resent() {
    let server = Server::start(vec![
        vec![
            Read,
            Raw(b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy".to_vec()),
        ],
        streaming_answer(),
    ])
    .await;
    let (r, _) = measure_at(&server.base).await;
    assert_eq!(r.error_kind, Some(ErrorKind::HttpStatus), "{r:?}");
    assert_eq!(r.retries, 0);
    assert_eq!((server.connections(), server.requests()), (1, 1));
}

/// (3d) No response head within the idle timeout: stalled, not resent (the server may be
/// working on it).
#[tokio::test(start_paused = true)]
async fn silence_before_the_head_is_stalled_and_not_resent() {
    let server = Server::start(vec![vec![Read, Stall], streaming_answer()]).await;
    let (r, took) = measure_at(&server.base).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Stalled), "{r:?}");
    assert_eq!(r.retries, 0);
    assert_eq!((server.connections(), server.requests()), (1, 1));
    assert_eq!(took, IDLE);
}

/// A pooled keep-alive connection that the server closed after its previous response
/// (without `connection: close`): the next request still succeeds, on a fresh connection,
/// resent at most once (hyper's pool resends it itself when it had not been written yet).
#[tokio::test(start_paused = true)]
async fn pooled_connection_closed_by_the_server_is_replaced() {
    let server = Server::start(vec![streaming_answer()]).await;
    let client = fleetbench_agent::http_clients().unwrap().streams;
    for i in 0..3 {
        let now = Instant::now();
        let ctx = RequestContext {
            origin: now,
            deadline: now + FAR,
            idle_timeout: IDLE,
        };
        let r = measure(
            &client,
            &server.base,
            &plan(),
            &ctx,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(r.error_kind, None, "request {i}: {}: {r:?}", r.error);
        assert!(r.retries <= 1, "request {i}: {r:?}");
        assert_eq!(server.requests(), i + 1);
    }
    assert_eq!(server.connections(), 3);
}

// ---------------------------------------------------------------------------------------
// Probes

const HEALTH_OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

async fn probe(
    client: &reqwest::Client,
    server: &Server,
) -> (Result<reqwest::Response, reqwest::Error>, Duration) {
    let url = format!("{}/health", server.base);
    let started = Instant::now();
    let r = send_idempotent(|| client.get(&url)).await;
    (r, started.elapsed())
}

/// (4) The first connection is closed unread, the second answers `/health`: OK after one
/// resend, 50 ms later.
#[tokio::test(start_paused = true)]
async fn probe_is_resent_after_a_closed_connection() {
    for first in [close_unread(), read_then_close()] {
        let server = Server::start(vec![first.clone(), vec![Read, Raw(HEALTH_OK.to_vec())]]).await;
        let client = fleetbench_agent::http_clients().unwrap().probes;
        let (r, took) = probe(&client, &server).await;
        let resp = r.unwrap_or_else(|e| panic!("{first:?}: {e:?}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
        assert_eq!(server.connections(), 2, "{first:?}");
        assert_eq!(took, PROBE_BACKOFF[0], "{first:?}");
    }
}

/// (4b) A server that always closes: 4 tries, 50 + 100 + 200 ms apart, then the error.
#[tokio::test(start_paused = true)]
async fn probe_gives_up_after_four_tries() {
    let server = Server::start(vec![close_unread()]).await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let (r, took) = probe(&client, &server).await;
    let e = r.unwrap_err();
    assert!(!e.is_timeout(), "{e:?}");
    assert_eq!(server.connections(), 4);
    assert_eq!(took, Duration::from_millis(350));
}

/// (4c) Nothing listening: connect errors are resent too, 4 tries in all.
#[tokio::test(start_paused = true)]
async fn probe_resends_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let url = format!("http://{addr}/health");
    let tries = AtomicUsize::new(0);
    let started = Instant::now();
    let e = send_idempotent(|| {
        tries.fetch_add(1, Ordering::SeqCst);
        client.get(&url)
    })
    .await
    .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert_eq!(tries.load(Ordering::SeqCst), 4);
    assert_eq!(started.elapsed(), Duration::from_millis(350));
}

/// (4d) A timeout is not resent: a slow engine stays slow.
#[tokio::test(start_paused = true)]
async fn probe_timeout_is_not_resent() {
    let server = Server::start(vec![vec![Read, Stall], vec![Read, Raw(HEALTH_OK.to_vec())]]).await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let url = format!("{}/health", server.base);
    let started = Instant::now();
    let e = send_idempotent(|| client.get(&url).timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!((server.connections(), server.requests()), (1, 1));
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}

/// (4e) An HTTP error status is an answer, not a transport error: not resent.
#[tokio::test(start_paused = true)]
async fn probe_error_status_is_not_resent() {
    let server = Server::start(vec![
        vec![
            Read,
            Raw(b"HTTP/1.1 503 Loading\r\ncontent-length: 0\r\n\r\n".to_vec()),
        ],
        vec![Read, Raw(HEALTH_OK.to_vec())],
    ])
    .await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let (r, took) = probe(&client, &server).await;
    assert_eq!(r.unwrap().status(), 503);
    assert_eq!((server.connections(), server.requests()), (1, 1));
    assert_eq!(took, Duration::ZERO);
}
