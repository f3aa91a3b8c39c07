//! A TCP proxy for network-fault tests: forwards `127.0.0.1:<port>` to a target with two
//! copy loops per connection, and has a switch that cuts every open connection and refuses
//! new ones (accepted and closed at once, before any byte is forwarded) until restored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Shared {
    target: SocketAddr,
    up: AtomicBool,
    /// Cancelled by [`TcpProxy::cut`]: ends every connection opened before the cut.
    conns: Mutex<CancellationToken>,
    /// Connections forwarded so far.
    forwarded: AtomicUsize,
    /// Connections refused while cut.
    refused: AtomicUsize,
}

/// A running proxy; stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            up: AtomicBool::new(true),
            conns: Mutex::new(CancellationToken::new()),
            forwarded: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(TcpProxy { addr, shared, stop })
    }

    /// The proxy's own address (give it to the client instead of the target's).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops all connections and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        if let Ok(mut t) = self.shared.conns.lock() {
            t.cancel();
            *t = CancellationToken::new();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        if !shared.up.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown().await;
            drop(client);
            continue;
        }
        let Ok(token) = shared.conns.lock().map(|t| t.clone()) else {
            return;
        };
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        let target = shared.target;
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            // Two copy loops; a cut drops both sockets mid-stream (no orderly goodbye
            // beyond the FIN/RST the kernel sends when they close).
            tokio::select! {
                _ = async {
                    tokio::join!(
                        async { let _ = tokio::io::copy(&mut cr, &mut sw).await; let _ = sw.shutdown().await; },
                        async { let _ = tokio::io::copy(&mut sr, &mut cw).await; let _ = cw.shutdown().await; },
                    )
                } => {}
                () = token.cancelled() => {}
            }
        });
    }
}
