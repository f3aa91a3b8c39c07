//! Resending requests that are safe to resend.
//!
//! Servers and proxies close idle keep-alive connections, sometimes right after a
//! response and without `connection: close`. A request given such a pooled connection
//! fails although the engine is fine. hyper's pool resends a request on a fresh
//! connection itself when the connection was found closed before the request was written
//! (hyper-util's `retry_canceled_requests`, on by default). What is left:
//!
//! - probes (`/health`, `/v1/models`, `/version`, `/tokenize`, `/metrics`, the tiny
//!   extension probes) are idempotent: [`send_idempotent`] resends them after any transport
//!   error but a timeout, [`PROBE_BACKOFF`] apart;
//! - a measured load request is resent only when the server never answered it and the
//!   connection was gone before any byte of a response ([`never_reached`]): no connection
//!   could be made, or a pooled connection the server had closed (it closes after a
//!   response without saying so; the request meets a closed socket and no server code
//!   reads it). Its record counts the resend, at most [`MAX_LOAD_RESENDS`]. A request
//!   that got any byte of a response is never resent: its failure is the measurement.

use std::future::Future;
use std::time::Duration;

/// Waits between the tries of an idempotent probe: 4 tries in all.
pub const PROBE_BACKOFF: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
];

/// Most resends of a load request that never reached the server.
pub const MAX_LOAD_RESENDS: u32 = 2;

/// Whether a request whose send failed with `e` never reached the server: no connection
/// could be made, or the connection ended (closed or reset) before any byte of a response
/// (on a pooled connection, the server's close after its previous response; hyper itself
/// resends a request that had not been written yet). Errors after the response head (a
/// stream cut mid-way) never reach here: they come from reading the body.
pub fn never_reached(e: &crate::load::clients::SendError) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(h) = inner.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            )
        {
            return true;
        }
        src = inner.source();
    }
    false
}

/// Whether a probe that failed with `e` is worth resending: any transport error but a
/// timeout (a slow engine stays slow) and a builder error (it would fail again).
fn transient(e: &reqwest::Error) -> bool {
    !e.is_timeout() && !e.is_builder()
}

/// Sends an idempotent request built by `make`, resending after a transient transport
/// error with [`PROBE_BACKOFF`] between tries. HTTP statuses are answers, not errors:
/// never resent here.
pub async fn send_idempotent(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    retry_with(&PROBE_BACKOFF, || make().send(), transient).await
}

/// Runs `attempt` until it succeeds, fails with an error `again` rejects, or `waits` is
/// used up (one wait before each resend).
pub async fn retry_with<T, E, F, Fut>(
    waits: &[Duration],
    mut attempt: F,
    again: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut waits = waits.iter();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => match waits.next() {
                Some(wait) if again(&e) => tokio::time::sleep(*wait).await,
                _ => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::Cell;
    use std::time::Duration;

    use super::retry_with;

    #[tokio::test]
    async fn resends_until_success_and_stops_at_the_limit_or_a_final_error() {
        let waits = [Duration::from_millis(1); 3];
        let n = Cell::new(0);
        let ok: Result<u32, &str> = retry_with(
            &waits,
            || {
                n.set(n.get() + 1);
                let k = n.get();
                async move { if k < 3 { Err("closed") } else { Ok(k) } }
            },
            |_| true,
        )
        .await;
        assert_eq!(ok, Ok(3));
        n.set(0);
        let err: Result<u32, &str> = retry_with(
            &waits,
            || {
                n.set(n.get() + 1);
                async { Err("closed") }
            },
            |_| true,
        )
        .await;
        assert_eq!((err, n.get()), (Err("closed"), 4));
        n.set(0);
        let err: Result<u32, &str> = retry_with(
            &waits,
            || {
                n.set(n.get() + 1);
                async { Err("timeout") }
            },
            |e| *e != "timeout",
        )
        .await;
        assert_eq!((err, n.get()), (Err("timeout"), 1));
    }
}
