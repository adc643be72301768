//! Serves already-bound DNS sockets with our own UDP worker threads (`udp.rs`) and TCP loops,
//! and stops them gracefully.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::TcpConfig;
use crate::metrics::Metrics;

use super::udp::UdpWorkers;
use super::{Handler, tcp};

/// A running DNS server (UDP and TCP).
pub struct DnsServer {
    /// The DNS/UDP worker threads.
    udp: UdpWorkers,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl DnsServer {
    /// Starts serving on the given sockets, with `udp_workers` threads per UDP socket.
    ///
    /// # Errors
    ///
    /// A UDP socket that cannot be handed to a worker thread, or a thread that cannot start.
    pub fn start(
        handler: Handler,
        (udp, udp_workers): (Vec<UdpSocket>, usize),
        tcp: Vec<TcpListener>,
        tcp_limits: &TcpConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<DnsServer> {
        let shutdown = CancellationToken::new();
        let udp = udp
            .into_iter()
            .map(UdpSocket::into_std)
            .collect::<std::io::Result<Vec<_>>>()?;
        let udp = UdpWorkers::start(&handler, udp, udp_workers, &shutdown)?;
        let mut tasks = JoinSet::new();
        // One connection budget over every DNS/TCP listener.
        let permits = Arc::new(Semaphore::new(
            usize::try_from(tcp_limits.max_connections).unwrap_or(usize::MAX),
        ));
        for listener in tcp {
            tasks.spawn(tcp::serve(
                listener,
                handler.clone(),
                tcp_limits.clone(),
                permits.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        Ok(DnsServer {
            udp,
            tasks,
            shutdown,
        })
    }

    /// Stops accepting queries and waits for the sockets' tasks to end (TCP connections close
    /// between messages).
    ///
    /// # Errors
    ///
    /// A task that panicked.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        // The UDP workers notice within their read timeout; joining them blocks.
        let udp = self.udp;
        tokio::task::spawn_blocking(move || udp.join()).await?;
        while let Some(joined) = self.tasks.join_next().await {
            joined?;
        }
        Ok(())
    }
}
