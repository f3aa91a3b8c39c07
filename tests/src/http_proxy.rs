//! An HTTP/1.1 proxy that behaves like servers found in the wild: it answers one request
//! per connection and then closes the socket *without* `connection: close` (as servers and
//! proxies do on an idle timeout), so a client that pools connections must cope with a
//! pooled connection that is dead. Each request goes to the target (e.g. vllm-sim) on a
//! fresh upstream connection.
//!
//! [`Fault`] makes it answer measured streaming requests itself with a broken stream (an
//! error object mid-stream, or garbage) while probes (`max_tokens` below 4) and every other
//! request pass through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy does to measured streaming requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: every request is forwarded.
    None,
    /// Two content chunks, then `data: {"error": …}` and the end of the stream.
    ErrorMidStream,
    /// Two content chunks, then a `data:` line that is not JSON.
    Garbage,
}

/// The most bytes of a request or response head read.
const MAX_HEAD: usize = 64 * 1024;

struct Shared {
    target: SocketAddr,
    fault: Fault,
    /// Responses written (each on its own connection, closed after it).
    served: AtomicUsize,
    /// Streams answered with a [`Fault`].
    faulted: AtomicUsize,
    /// Measured streaming requests read and forwarded to the target.
    forwarded_streams: AtomicUsize,
}

/// A running proxy; stops when dropped.
pub struct ClosingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl ClosingProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    pub async fn start(target: SocketAddr, fault: Fault) -> std::io::Result<ClosingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            fault,
            served: AtomicUsize::new(0),
            faulted: AtomicUsize::new(0),
            forwarded_streams: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let (sh, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = st.cancelled() => return,
                };
                let Ok((conn, _)) = accepted else { continue };
                let sh = sh.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(conn, &sh) => {}
                        () = st.cancelled() => {}
                    }
                });
            }
        });
        Ok(ClosingProxy { addr, shared, stop })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Responses written so far.
    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Measured streaming requests (`max_tokens` 4 or more) that reached the proxy and were
    /// forwarded: a request resent after it reached the server would count twice.
    pub fn forwarded_streams(&self) -> usize {
        self.shared.forwarded_streams.load(Ordering::SeqCst)
    }

    /// Streams answered with the fault so far.
    pub fn faulted(&self) -> usize {
        self.shared.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for ClosingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads from `conn` into `buf` until it holds a complete head (`\r\n\r\n`); returns the
/// head's length, or `None` at EOF first.
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head's lines without any `connection` header, as text ending in `\r\n\r\n`, with
/// `extra` header lines added.
fn rewrite_head(head: &[u8], extra: &str) -> (String, Option<usize>) {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let mut length = None;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(extra);
    out.push_str("\r\n");
    (out, length)
}

async fn serve(mut client: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let Some(head_len) = read_head(&mut client, &mut buf).await? else {
        return Ok(());
    };
    let (head, length) = rewrite_head(&buf[..head_len], "connection: close\r\n");
    let mut body = buf[head_len..].to_vec();
    let want = length.unwrap_or(0);
    while body.len() < want {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let measured = is_measured_stream(&head, &body);
    if sh.fault != Fault::None && measured {
        sh.faulted.fetch_add(1, Ordering::SeqCst);
        client.write_all(&faulty_stream(sh.fault)).await?;
    } else {
        if measured {
            sh.forwarded_streams.fetch_add(1, Ordering::SeqCst);
        }
        let mut upstream = TcpStream::connect(sh.target).await?;
        upstream.write_all(head.as_bytes()).await?;
        upstream.write_all(&body).await?;
        let mut resp = Vec::new();
        let Some(resp_head) = read_head(&mut upstream, &mut resp).await? else {
            return Ok(());
        };
        // The response head without `connection: close`: the client thinks it may reuse
        // the connection, which is closed below.
        let (head, _) = rewrite_head(&resp[..resp_head], "");
        client.write_all(head.as_bytes()).await?;
        client.write_all(&resp[resp_head..]).await?;
        tokio::io::copy(&mut upstream, &mut client).await?;
    }
    client.flush().await?;
    sh.served.fetch_add(1, Ordering::SeqCst);
    // Closed without a word: no `connection: close` was sent.
    client.shutdown().await
}

/// A streamed completion request of the measured load (probes ask for 1 or 2 tokens).
fn is_measured_stream(head: &str, body: &[u8]) -> bool {
    if !head.starts_with("POST ") {
        return false;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    json["stream"] == true && json["max_tokens"].as_u64().is_some_and(|n| n >= 4)
}

fn faulty_stream(fault: Fault) -> Vec<u8> {
    let content = |t: &str| {
        format!(
            "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"text\":\"{t}\",\"finish_reason\":null}}]}}\n\n"
        )
    };
    let mut events = vec![content("a"), content("b")];
    events.push(match fault {
        Fault::ErrorMidStream => "data: {\"error\":{\"message\":\"simulated engine error\",\"type\":\"InternalServerError\",\"code\":500}}\n\n".to_string(),
        Fault::Garbage | Fault::None => "data: {this is not json\n\n".to_string(),
    });
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for e in events {
        out.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
