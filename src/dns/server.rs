//! Registers already-bound UDP sockets with hickory's server, runs DNS over TCP on our own
//! accept loop (`tcp.rs`: a connection budget, backoff on accept errors), and stops both
//! gracefully.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

use super::{Handler, tcp};

/// A running DNS server (UDP and TCP).
pub struct DnsServer {
    server: Server<Handler>,
    /// Stops the TCP accept loops.
    tcp_shutdown: CancellationToken,
    /// The TCP accept loops, one per listener.
    tcp: JoinSet<()>,
}

impl DnsServer {
    /// Starts serving on the given sockets; DNS/TCP connections close after `tcp_idle_timeout`
    /// without a message, and at most `tcp_max_connections` are open at once, over all TCP
    /// listeners together.
    pub fn start(
        handler: Handler,
        udp: Vec<UdpSocket>,
        tcp: Vec<TcpListener>,
        (tcp_idle_timeout, tcp_max_connections): (Duration, usize),
        metrics: Arc<Metrics>,
    ) -> DnsServer {
        let mut server = Server::new(handler.clone());
        for socket in udp {
            server.register_socket(socket);
        }
        let tcp_shutdown = CancellationToken::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(tcp_max_connections));
        let mut tasks = JoinSet::new();
        for listener in tcp {
            tasks.spawn(tcp::serve(
                listener,
                handler.clone(),
                tcp_idle_timeout,
                permits.clone(),
                metrics.clone(),
                tcp_shutdown.clone(),
            ));
        }
        DnsServer {
            server,
            tcp_shutdown,
            tcp: tasks,
        }
    }

    /// Stops accepting queries and waits for the sockets' tasks to end.
    ///
    /// # Errors
    ///
    /// The first error a socket task ended with.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.tcp_shutdown.cancel();
        self.server.shutdown_gracefully().await?;
        while self.tcp.join_next().await.is_some() {}
        Ok(())
    }
}
