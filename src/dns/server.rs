//! Serves DNS/UDP on our own worker threads (`udp.rs`: one `SO_REUSEPORT` socket per worker)
//! and DNS over TCP on our own accept loop (`tcp.rs`: a connection budget, backoff on accept
//! errors), and stops both gracefully.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

use super::udp::UdpWorkers;
use super::{Handler, tcp};

/// A running DNS server (UDP and TCP).
pub struct DnsServer {
    /// The DNS/UDP worker threads.
    udp: UdpWorkers,
    /// Stops the UDP workers and the TCP accept loops.
    shutdown: CancellationToken,
    /// The TCP accept loops, one per listener.
    tcp: JoinSet<()>,
}

impl DnsServer {
    /// Starts serving on the given sockets with `udp_workers` threads per UDP socket; DNS/TCP
    /// connections close after `tcp_idle_timeout` without a message, and at most
    /// `tcp_max_connections` are open at once, over all TCP listeners together.
    ///
    /// # Errors
    ///
    /// A UDP socket that cannot be handed to a worker thread, or a thread that cannot start.
    pub fn start(
        handler: Handler,
        (udp, udp_workers): (Vec<UdpSocket>, usize),
        tcp: Vec<TcpListener>,
        (tcp_idle_timeout, tcp_max_connections): (Duration, usize),
        metrics: Arc<Metrics>,
    ) -> std::io::Result<DnsServer> {
        let tcp_shutdown = CancellationToken::new();
        let udp = udp
            .into_iter()
            .map(UdpSocket::into_std)
            .collect::<std::io::Result<Vec<_>>>()?;
        let udp = UdpWorkers::start(&handler, udp, udp_workers, &tcp_shutdown)?;
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
        Ok(DnsServer {
            udp,
            shutdown: tcp_shutdown,
            tcp: tasks,
        })
    }

    /// Stops accepting queries and waits for the sockets' tasks to end.
    ///
    /// # Errors
    ///
    /// The first error a socket task ended with.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let udp = self.udp;
        tokio::task::spawn_blocking(move || udp.join()).await?;
        while self.tcp.join_next().await.is_some() {}
        Ok(())
    }
}
