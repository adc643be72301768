//! The control plane's HTTP accept loop: hyper's HTTP/1 connection on each accepted socket,
//! with the limits `axum::serve` does not offer.
//!
//! - At most `control.max_connections` connections are open; the next waits in the listen
//!   backlog until one closes, so the control plane cannot use up the file descriptors DNS over
//!   TCP needs.
//! - A client has `control.header_read_timeout_seconds` to send a request head, counted from
//!   when the server starts waiting for it (hyper's timer), which also bounds how long a
//!   kept-alive connection may sit between requests.
//! - A connection on which no byte moves either way for `control.idle_timeout_seconds` (a
//!   stalled body, a client that stopped reading) is closed.
//! - A failed `accept` (out of file descriptors, for one) is counted, logged at most once per
//!   interval with the number of failures since, and followed by a pause that doubles up to a
//!   second ([`AcceptErrors`], shared with DNS over TCP): the loop never spins on an error.
//!
//! Each request carries its peer address (`ConnectInfo`) for the per-address rate limit. Shutdown
//! stops accepting and lets every connection finish the request in hand (hyper's graceful
//! shutdown); the caller bounds the wait. The routes themselves are in `mod.rs`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::debug;

use crate::dns::AcceptErrors;
use crate::dns::Shared;
use crate::metrics::Metrics;

/// Serves `router` on `listener` until `shutdown`, then waits for open connections to finish
/// their requests. Limits and timeouts come from the configuration serving when a connection is
/// accepted (`max_connections` from the one serving at start).
///
/// # Errors
///
/// None today: accept errors are retried; the `Result` matches what `app` awaits.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shared: Shared,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let max_connections = shared.load().loaded.config.control.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::new("http");
    loop {
        while connections.try_join_next().is_some() {}
        let Some((stream, peer, permit)) = errors
            .accept(&listener, &permits, &metrics, &shutdown)
            .await
        else {
            break;
        };
        let control = &shared.load().loaded.config.control;
        let limits = (control.header_read_timeout, control.idle_timeout);
        let (router, metrics, shutdown) = (router.clone(), metrics.clone(), shutdown.clone());
        connections.spawn(async move {
            metrics.add_control_connections(1);
            connection(stream, peer, router, limits, shutdown).await;
            metrics.add_control_connections(-1);
            drop(permit);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it ends, idles out or finishes after `shutdown`.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    (header_read_timeout, idle_timeout): (Duration, Duration),
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = Tracked {
        stream,
        started,
        activity: activity.clone(),
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(request.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "control-plane connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(last + idle_timeout) => {
                let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
                if last + idle_timeout <= Instant::now() {
                    debug!(%peer, ?idle_timeout, "closing an idle control-plane connection");
                    // Dropping the connection closes the socket; nothing has moved on it for
                    // the whole idle timeout, so there is nothing to finish.
                    return;
                }
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A TCP stream that records when bytes last moved, for the idle timeout.
struct Tracked {
    stream: TcpStream,
    started: Instant,
    /// Milliseconds after `started` of the last read or write that moved bytes; atomic because
    /// the connection's watchdog reads it while hyper polls the stream (both on one task today,
    /// but nothing in the types says so).
    activity: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(elapsed, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            self.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            self.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
