//! DNS over UDP: a few receive loops per socket, each answering one datagram at a time through
//! [`Handler::answer`] (which applies response rate limiting) and sending the reply.
//!
//! Each loop owns one receive buffer for its whole life and spawns nothing per datagram, so a
//! flood costs CPU but no memory: what a datagram needs is freed before the next is read. Errors
//! on a socket are logged at `debug` only: a flood of them must not become a flood of logs.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Handler;
use super::respond::Transport;

/// The largest datagram we read; anything longer is cut and will not decode.
const MAX_DATAGRAM: usize = 65_535;

/// Serves DNS/UDP on `socket` with `loops` receive loops until `shutdown` is cancelled.
pub(crate) async fn serve(
    socket: UdpSocket,
    handler: Handler,
    loops: usize,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..loops.max(1) {
        let socket = socket.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { receive(&socket, &handler, &shutdown).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn receive(socket: &UdpSocket, handler: &Handler, shutdown: &CancellationToken) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            () = shutdown.cancelled() => return,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends surface here (ECONNREFUSED); keep serving.
                debug!(%error, "DNS/UDP receive failed");
                continue;
            }
        };
        if peer.port() == 0 {
            // A reply to port 0 cannot be delivered.
            continue;
        }
        if let Some(reply) = handler.answer(&buffer[..len], peer, Transport::Udp)
            && let Err(error) = socket.send_to(&reply, peer).await
        {
            debug!(%error, %peer, "DNS/UDP send failed");
        }
    }
}
