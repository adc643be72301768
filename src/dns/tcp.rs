//! DNS over TCP (RFC 7766) on our own accept loop, so that it has a connection budget of its
//! own and survives running out of file descriptors.
//!
//! hickory's listener loop accepts without limit and retries a failed `accept` at once, logging
//! at `debug`: out of file descriptors (`EMFILE`), it spins a core and says nothing, and one
//! flood of idle connections starves the control plane too. Here:
//! - at most `server.tcp_max_connections` connections are open; the next waits in the listen
//!   backlog until one closes;
//! - a failed `accept` is counted (`meridian_accept_errors_total{listener="dns-tcp"}`), logged
//!   at most once per [`ACCEPT_ERROR_LOG_INTERVAL`] with the number of failures since, and
//!   followed by a pause that doubles up to [`MAX_ACCEPT_BACKOFF`];
//! - a connection that sends no complete message for `server.tcp_idle_timeout_seconds` is
//!   closed (RFC 7766 §6.2.3), as hickory did.
//!
//! Each message (two-byte length, RFC 1035 §4.2.2) is answered by the same [`Handler`] as UDP,
//! one at a time per connection, and written back in order. [`AcceptErrors`] is shared with the
//! control plane's HTTP loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;

use super::Handler;

/// The least time between two log lines about failed accepts on one listener.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The first pause after a failed accept.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause after failed accepts in a row.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How many answers of one connection may wait to be written before it reads no more.
const TCP_RESPONSE_BUFFER: usize = 32;

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

    /// Waits for one of the connection budget's `permits`, then for a connection; a failed
    /// accept is counted, logged (at most once per interval) and followed by a pause before the
    /// next try. `None` once `shutdown` is cancelled.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        permits: &Arc<Semaphore>,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => return None,
        };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff = MIN_ACCEPT_BACKOFF;
                    return Some((stream, peer, permit));
                }
                Err(error) => {
                    let pause = self.failed(&error, metrics);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
            }
        }
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

/// Serves DNS over TCP on `listener` until `shutdown`; connections in progress finish the
/// message in hand.
pub(super) async fn serve(
    listener: TcpListener,
    handler: Handler,
    idle_timeout: Duration,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let handler = Arc::new(handler);
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::new("dns-tcp");
    loop {
        while connections.try_join_next().is_some() {}
        let Some((stream, peer, permit)) = errors
            .accept(&listener, &permits, &metrics, &shutdown)
            .await
        else {
            break;
        };
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        connections.spawn(async move {
            connection(stream, peer, &handler, idle_timeout, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Answers the messages of one connection in order until it closes, idles out or the server
/// stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (replies, mut outgoing) = mpsc::channel::<Vec<u8>>(TCP_RESPONSE_BUFFER);
    let writing = tokio::spawn(async move {
        while let Some(reply) = outgoing.recv().await {
            let Ok(len) = u16::try_from(reply.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply);
            if writer.write_all(&framed).await.is_err() {
                break;
            }
        }
    });
    let responder = Responder { replies };
    loop {
        let read = async {
            let len = reader.read_u16().await?;
            let mut message = vec![0u8; usize::from(len)];
            reader.read_exact(&mut message).await?;
            Ok::<_, io::Error>(message)
        };
        let message = tokio::select! {
            read = tokio::time::timeout(idle_timeout, read) => match read {
                Ok(Ok(message)) => message,
                Ok(Err(error)) => {
                    debug!(%peer, %error, "DNS/TCP connection closed");
                    break;
                }
                Err(_) => {
                    debug!(%peer, ?idle_timeout, "closing an idle DNS/TCP connection");
                    break;
                }
            },
            () = shutdown.cancelled() => break,
        };
        match Request::from_bytes(message.clone(), peer, Protocol::Tcp) {
            Ok(request) => {
                handler
                    .handle_request::<_, TokioTime>(&request, responder.clone())
                    .await;
            }
            Err(error) => {
                debug!(%peer, %error, "undecodable DNS/TCP message");
                // RFC 1035 §4.1.1: a message whose header reads gets FORMERR; shorter ones
                // are dropped, as hickory does.
                match form_error(&message) {
                    Some(reply) => {
                        if responder.replies.send(reply).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
    }
    drop(responder);
    let _ = writing.await;
}

/// FORMERR for a message whose header decodes: the same id and opcode, nothing else.
pub(super) fn form_error(message: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(message)).ok()?;
    let mut metadata = Metadata::new(
        header.metadata.id,
        MessageType::Response,
        header.metadata.op_code,
    );
    metadata.response_code = ResponseCode::FormErr;
    let reply = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    reply.to_bytes().ok()
}

/// Sends a connection's answers to its writer task.
#[derive(Clone)]
struct Responder {
    replies: mpsc::Sender<Vec<u8>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Responder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(u16::MAX);
        let info = response.destructive_emit(&mut encoder)?;
        self.replies
            .send(bytes)
            .await
            .map_err(|_| NetError::from("the DNS/TCP connection closed"))?;
        Ok(info)
    }
}
