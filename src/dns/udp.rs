//! DNS over UDP on our own worker threads, instead of hickory's task per request.
//!
//! Each configured DNS address gets `server.udp_workers` plain threads, each with its own socket
//! bound to the same address with `SO_REUSEPORT`, so the kernel spreads datagrams over them and
//! no two workers contend for one receive queue. The socket handed in by `app` (bound already,
//! perhaps on port 0) is the first worker's; the others bind its local address. When the
//! kernel refuses another socket there (a socket bound without `SO_REUSEPORT`, as `app` does on port
//! 0), the remaining workers share the first socket instead, which is correct, only slower.
//!
//! A worker is a tight loop: receive a batch of datagrams (`batch.rs`: one `recvmmsg`), answer
//! each through [`Handler::answer`] (the fast path for the common shapes, else the general
//! path as for TCP, with response rate limiting either way), send the replies (one
//! `sendmmsg`). It owns its buffers for its whole life and spawns nothing per datagram.
//! Blocking reads wake up every [`POLL_INTERVAL`] to look at the shutdown token, so stopping
//! needs no wake-up datagram and takes at most that long.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Handler;
use super::batch::Batch;
use super::respond::Transport;

/// How often a worker blocked in `recv_from` wakes up to see whether the server is stopping.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The worker threads serving DNS/UDP on every address.
pub(super) struct UdpWorkers {
    threads: Vec<JoinHandle<()>>,
}

impl UdpWorkers {
    /// Starts `workers` threads (at least one) on each of `sockets`, answering through `handler`
    /// until `shutdown` is cancelled.
    ///
    /// # Errors
    ///
    /// A socket that cannot be made blocking with a read timeout, or a thread that cannot be
    /// spawned.
    pub(super) fn start(
        handler: &Handler,
        sockets: Vec<UdpSocket>,
        workers: usize,
        shutdown: &CancellationToken,
    ) -> io::Result<UdpWorkers> {
        let mut threads = Vec::new();
        for first in sockets {
            let addr = first.local_addr()?;
            let first = Arc::new(blocking(first)?);
            let mut worker_sockets = vec![first.clone()];
            for _ in 1..workers.max(1) {
                // Shared, not cloned, when the kernel refuses: a clone would cost a descriptor.
                let socket = match bind_reuseport(addr).and_then(blocking) {
                    Ok(socket) => Arc::new(socket),
                    Err(error) => {
                        debug!(%addr, %error, "cannot bind another SO_REUSEPORT socket; sharing one");
                        first.clone()
                    }
                };
                worker_sockets.push(socket);
            }
            for (index, socket) in worker_sockets.into_iter().enumerate() {
                let (handler, shutdown) = (handler.clone(), shutdown.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("dns-udp-{index}"))
                        .spawn(move || serve(&socket, &handler, &shutdown))?,
                );
            }
        }
        Ok(UdpWorkers { threads })
    }

    /// Waits for every worker to notice shutdown and end (blocking: call it off the runtime).
    pub(super) fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                warn!("a DNS/UDP worker panicked");
            }
        }
    }
}

/// `socket` made blocking, with the read timeout that lets its worker see shutdown.
fn blocking(socket: UdpSocket) -> io::Result<UdpSocket> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(POLL_INTERVAL))?;
    Ok(socket)
}

/// Binds another socket on `addr` with `SO_REUSEPORT`, as `app` binds the first one.
fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// One worker's loop: receive a batch, answer each datagram, send the replies, until
/// `shutdown`.
fn serve(socket: &UdpSocket, handler: &Handler, shutdown: &CancellationToken) {
    let mut batch = Batch::new();
    while !shutdown.is_cancelled() {
        let n = match batch.receive(socket) {
            Ok(n) => n,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                // ICMP errors of earlier sends (ECONNREFUSED) surface here; they concern one
                // client, never the socket.
                debug!(%error, "DNS/UDP receive failed");
                continue;
            }
        };
        for i in 0..n {
            let (query, src, reply) = batch.slot(i);
            // A reply to port 0 (or to no address) cannot be delivered.
            let answered = match src {
                Some(src) if src.port() != 0 => handler.answer(query, src, Transport::Udp, reply),
                _ => false,
            };
            if !answered {
                reply.clear();
            }
        }
        let failed = batch.send(socket);
        if failed > 0 {
            debug!(failed, "DNS/UDP send failed");
        }
    }
}
