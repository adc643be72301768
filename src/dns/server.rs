//! Serves already-bound DNS sockets with our own UDP and TCP loops, and stops them gracefully.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::TcpConfig;
use crate::metrics::Metrics;

use super::{Handler, tcp, udp};

/// A running DNS server (UDP and TCP).
pub struct DnsServer {
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl DnsServer {
    /// Starts serving on the given sockets.
    pub fn start(
        handler: Handler,
        udp: Vec<UdpSocket>,
        tcp: Vec<TcpListener>,
        tcp_limits: &TcpConfig,
        metrics: Arc<Metrics>,
    ) -> DnsServer {
        let shutdown = CancellationToken::new();
        // One receive loop per core per socket: answering is CPU work with no await but the send.
        let loops = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut tasks = JoinSet::new();
        // One connection budget over every DNS/TCP listener.
        let permits = Arc::new(Semaphore::new(
            usize::try_from(tcp_limits.max_connections).unwrap_or(usize::MAX),
        ));
        for socket in udp {
            tasks.spawn(udp::serve(socket, handler.clone(), loops, shutdown.clone()));
        }
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
        DnsServer { tasks, shutdown }
    }

    /// Stops accepting queries and waits for the sockets' tasks to end (TCP connections close
    /// between messages).
    ///
    /// # Errors
    ///
    /// A task that panicked.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            joined?;
        }
        Ok(())
    }
}
