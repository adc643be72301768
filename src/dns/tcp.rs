//! DNS over TCP (RFC 7766): our own accept loop and connection handling, with the limits a
//! public authoritative server needs.
//!
//! - At most `max_connections` connections at once over all DNS addresses (the next waits in
//!   the listen backlog until one closes), and `max_connections_per_client` from one address
//!   (a connection over it is closed as soon as it is accepted).
//! - A message must arrive whole within `message_timeout` of its first byte (a length prefix
//!   followed by a stall is closed in about that time, as Knot does), and a connection may sit
//!   idle between messages for `idle_timeout`. Writing a reply has `message_timeout` too, so a
//!   client that does not read cannot hold a connection.
//! - Queries are answered one at a time in the order received: pipelined queries get their
//!   replies in order (RFC 7766 §6.2.1.1 allows either order; in order is simplest for clients).
//! - A frame that is not a query (shorter than a header, a response, or a message that does not
//!   decode, after its FORMERR) closes the connection.
//! - A failed accept (EMFILE, ENFILE, ENOBUFS) is counted (`meridian_accept_errors_total`
//!   with `listener="dns-tcp"`), logged at most once per [`ACCEPT_ERROR_LOG_INTERVAL`] with how
//!   many failed since, and backs off from [`MIN_ACCEPT_BACKOFF`] doubling to
//!   [`MAX_ACCEPT_BACKOFF`], instead of spinning a core: [`AcceptErrors`], which the control
//!   plane's HTTP loop shares.
//!
//! Every answer comes from [`Handler::answer`]; this file does no DNS itself.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::TcpConfig;
use crate::metrics::{DnsEvent, Metrics};

use super::Handler;
use super::respond::Transport;

/// The least time between two log lines about failed accepts on one listener.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The first pause after a failed accept.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause after failed accepts in a row.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Bytes read from a connection at a time: many pipelined queries fit in one read.
const READ_BUFFER: usize = 4096;
/// Header length (RFC 1035 §4.1.1): a shorter frame cannot be a query.
const HEADER_LEN: usize = 12;

/// What a listener does about failed accepts: count, log once per interval, back off.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    backoff: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// For the listener named `listener` in logs and metrics (`http`, `dns-tcp`).
    pub fn new(listener: &'static str) -> AcceptErrors {
        AcceptErrors {
            listener,
            backoff: MIN_ACCEPT_BACKOFF,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// Waits for a connection, then for one of the connection budget's `permits`; a failed
    /// accept is counted, logged (at most once per interval) and followed by a pause before the
    /// next try. `None` once `shutdown` is cancelled.
    ///
    /// The permit is taken after the accept, not before: several listeners share one budget,
    /// and a listener idle in `accept` must not hold a permit another listener's client needs.
    /// Each listener so holds at most one accepted connection beyond the budget while it waits.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        permits: &Arc<Semaphore>,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let (stream, peer) = loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return None,
            };
            match accepted {
                Ok(accepted) => {
                    self.backoff = MIN_ACCEPT_BACKOFF;
                    break accepted;
                }
                Err(error) => {
                    let pause = self.failed(&error, metrics);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
            }
        };
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => return None,
        };
        Some((stream, peer, permit))
    }

    /// Counts and (at most once per interval) logs `error`; returns how long to pause.
    fn failed(&mut self, error: &io::Error, metrics: &Metrics) -> Duration {
        metrics.record_accept_error(self.listener);
        self.unlogged += 1;
        let pause = self.backoff;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL)
        {
            warn!(
                %error,
                listener = self.listener,
                failures = self.unlogged,
                backoff = ?pause,
                "accepting connections fails; backing off"
            );
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).min(MAX_ACCEPT_BACKOFF);
        pause
    }
}

/// Serves DNS/TCP on `listener` until `shutdown` is cancelled, then closes every connection
/// between messages and returns once they are all closed. `permits` is the connection budget
/// of all DNS/TCP listeners together.
pub(super) async fn serve(
    listener: TcpListener,
    handler: Handler,
    limits: TcpConfig,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let counts = Arc::new(Counts::default());
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::new("dns-tcp");
    loop {
        // Reap finished connections so the set does not grow with the total ever accepted.
        while connections.try_join_next().is_some() {}
        let Some((stream, peer, permit)) = errors
            .accept(&listener, &permits, &metrics, &shutdown)
            .await
        else {
            break;
        };
        let Some(slot) = counts.admit(peer.ip(), &limits) else {
            // Over the per-client cap: closing now is the cheapest answer, and the client may
            // retry.
            metrics.record_dns_event(DnsEvent::TcpRefusedPerClient);
            debug!(%peer, "closing a DNS/TCP connection over the per-client limit");
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        connections.spawn(async move {
            let closed = connection(stream, peer, &handler, &limits, &shutdown).await;
            match closed {
                Closed::MessageTimeout => metrics.record_dns_event(DnsEvent::TcpMessageTimeout),
                Closed::IdleTimeout => metrics.record_dns_event(DnsEvent::TcpIdleTimeout),
                Closed::Done => {}
            }
            debug!(%peer, ?closed, "DNS/TCP connection closed");
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    // Connections notice the cancellation between messages.
    while connections.join_next().await.is_some() {}
}

/// Why a connection ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The client closed, sent garbage, an I/O error, or shutdown.
    Done,
    /// A message (or a reply's write) did not complete in time.
    MessageTimeout,
    /// Nothing arrived between messages in time.
    IdleTimeout,
}

/// Reads queries from one connection and writes their replies, in order.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    limits: &TcpConfig,
    shutdown: &CancellationToken,
) -> Closed {
    // Replies are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    loop {
        // Between messages: wait for the first byte of the next one.
        let first = tokio::select! {
            first = timeout(limits.idle_timeout, read.fill_buf()) => first,
            () = shutdown.cancelled() => return Closed::Done,
        };
        match first {
            Err(_) => return Closed::IdleTimeout,
            Ok(Err(_)) => return Closed::Done,
            Ok(Ok([])) => return Closed::Done,
            Ok(Ok(_)) => {}
        }
        // From the first byte, the whole message must arrive within the message timeout.
        let deadline = Instant::now() + limits.message_timeout;
        let message = timeout_at(deadline, async {
            let len = usize::from(read.read_u16().await?);
            let mut message = vec![0; len];
            read.read_exact(&mut message).await?;
            Ok::<_, io::Error>(message)
        })
        .await;
        let message = match message {
            Err(_) => return Closed::MessageTimeout,
            Ok(Err(_)) => return Closed::Done,
            Ok(Ok(message)) => message,
        };
        if message.len() < HEADER_LEN {
            return Closed::Done;
        }
        let mut reply = Vec::new();
        if !handler.answer(&message, peer, Transport::Tcp, &mut reply) {
            // Not a query: nothing good can follow on this connection.
            return Closed::Done;
        }
        let Ok(len) = u16::try_from(reply.len()) else {
            return Closed::Done;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match timeout(limits.message_timeout, write.write_all(&framed)).await {
            Err(_) => return Closed::MessageTimeout,
            Ok(Err(_)) => return Closed::Done,
            Ok(Ok(())) => {}
        }
        if is_form_error(&reply) {
            // The query did not decode: its FORMERR is sent, and the stream may be out of step.
            return Closed::Done;
        }
    }
}

/// Whether `reply` is a FORMERR (RCODE 1 in the low bits of the fourth header byte).
fn is_form_error(reply: &[u8]) -> bool {
    reply.get(3).is_some_and(|flags| flags & 0x0f == 1)
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct Counts {
    /// A `Mutex` because it is touched only on accept and close, never per query.
    per_client: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; dropping it gives its place back.
struct Slot {
    counts: Arc<Counts>,
    client: IpAddr,
}

impl Counts {
    /// Admits a connection from `client` when the per-client limit allows it.
    fn admit(self: &Arc<Self>, client: IpAddr, limits: &TcpConfig) -> Option<Slot> {
        let mut per_client = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = per_client.entry(client).or_default();
        if *count >= limits.max_connections_per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_client = self
            .counts
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Forget the address, so the map holds only clients with open connections.
                per_client.remove(&self.client);
            }
        }
    }
}
