//! DNS over TCP (RFC 7766): our own accept loop and connection handling, with the limits a
//! public authoritative server needs.
//!
//! - At most `max_connections` connections at once, and `max_connections_per_client` from one
//!   address; a connection over either limit is closed as soon as it is accepted.
//! - A message must arrive whole within `message_timeout` of its first byte (a length prefix
//!   followed by a stall is closed in about that time, as Knot does), and a connection may sit
//!   idle between messages for `idle_timeout`. Writing a reply has `message_timeout` too, so a
//!   client that does not read cannot hold a connection.
//! - Queries are answered one at a time in the order received: pipelined queries get their
//!   replies in order (RFC 7766 §6.2.1.1 allows either order; in order is simplest for clients).
//! - A frame that is not a query (shorter than a header, a response, or a message that does not
//!   decode, after its FORMERR) closes the connection.
//! - A failed accept (EMFILE, ENFILE, ENOBUFS) is counted (`meridian_accept_errors_total`
//!   with `listener="dns"`, as the control plane counts `"http"`), logged at most once per
//!   [`ACCEPT_LOG_INTERVAL`] with how many failed since, and backs off from
//!   [`ACCEPT_BACKOFF_MIN`] doubling to [`ACCEPT_BACKOFF_MAX`], instead of spinning a core.
//!
//! Every answer comes from [`Handler::answer`]; this file does no DNS itself.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::TcpConfig;
use crate::metrics::{DnsEvent, Metrics};

use super::Handler;
use super::respond::Transport;

/// The first pause after a failed accept.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between failed accepts.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Failed accepts are logged at most this often.
pub(crate) const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes read from a connection at a time: many pipelined queries fit in one read.
const READ_BUFFER: usize = 4096;
/// Header length (RFC 1035 §4.1.1): a shorter frame cannot be a query.
const HEADER_LEN: usize = 12;

/// Serves DNS/TCP on `listener` until `shutdown` is cancelled, then closes every connection
/// between messages and returns once they are all closed.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Handler,
    limits: TcpConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let counts = Arc::new(Counts::default());
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        // Reap finished connections so the set does not grow with the total ever accepted.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(error) => {
                // One metric for every listener's failed accepts, shared with the control plane's.
                metrics.record_accept_error("dns");
                failures.log(&error, Instant::now());
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Some(slot) = counts.admit(peer.ip(), &limits) else {
            // Over a limit: closing now is the cheapest answer, and the client may retry.
            let event = if counts.total() >= limits.max_connections {
                DnsEvent::TcpRefusedTotal
            } else {
                DnsEvent::TcpRefusedPerClient
            };
            metrics.record_dns_event(event);
            debug!(%peer, ?event, "closing a DNS/TCP connection over the limit");
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
        });
    }
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
            Ok::<_, std::io::Error>(message)
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
        let Some(reply) = handler.answer(&message, peer, Transport::Tcp) else {
            // Not a query: nothing good can follow on this connection.
            return Closed::Done;
        };
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

/// Open connections, in total and per client address.
#[derive(Debug, Default)]
struct Counts {
    /// A `Mutex` because it is touched only on accept and close, never per query, and both
    /// numbers must change together.
    inner: Mutex<CountsInner>,
}

#[derive(Debug, Default)]
struct CountsInner {
    total: u32,
    per_client: HashMap<IpAddr, u32>,
}

/// One admitted connection; dropping it gives its place back.
struct Slot {
    counts: Arc<Counts>,
    client: IpAddr,
}

impl Counts {
    /// Admits a connection from `client` when both limits allow it.
    fn admit(self: &Arc<Self>, client: IpAddr, limits: &TcpConfig) -> Option<Slot> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.total >= limits.max_connections {
            return None;
        }
        let per_client = inner.per_client.entry(client).or_default();
        if *per_client >= limits.max_connections_per_client {
            return None;
        }
        *per_client += 1;
        inner.total += 1;
        Some(Slot {
            counts: self.clone(),
            client,
        })
    }

    fn total(&self) -> u32 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self
            .counts
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inner.total -= 1;
        if let Some(count) = inner.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Forget the address, so the map holds only clients with open connections.
                inner.per_client.remove(&self.client);
            }
        }
    }
}

/// Rate-limits the log of failed accepts: one line per interval, saying how many failed.
#[derive(Debug, Default)]
struct AcceptFailures {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    fn log(&mut self, error: &std::io::Error, now: Instant) {
        self.unlogged += 1;
        if self
            .last_logged
            .is_some_and(|last| now.duration_since(last) < ACCEPT_LOG_INTERVAL)
        {
            return;
        }
        warn!(
            %error,
            failed = self.unlogged,
            "DNS/TCP accept failing; backing off (out of file descriptors?)"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}
