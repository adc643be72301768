//! Registers already-bound DNS sockets with hickory's server and stops it gracefully.

use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::Handler;

/// How many responses may queue per TCP connection before the connection waits.
const TCP_RESPONSE_BUFFER: usize = 32;

/// A running DNS server (UDP and TCP).
pub struct DnsServer {
    server: Server<Handler>,
}

impl DnsServer {
    /// Starts serving on the given sockets.
    pub fn start(
        handler: Handler,
        udp: Vec<UdpSocket>,
        tcp: Vec<TcpListener>,
        tcp_idle_timeout: Duration,
    ) -> DnsServer {
        let mut server = Server::new(handler);
        for socket in udp {
            server.register_socket(socket);
        }
        for listener in tcp {
            server.register_listener(listener, tcp_idle_timeout, TCP_RESPONSE_BUFFER);
        }
        DnsServer { server }
    }

    /// Stops accepting queries and waits for the sockets' tasks to end.
    ///
    /// # Errors
    ///
    /// The first error a socket task ended with.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.server.shutdown_gracefully().await?;
        Ok(())
    }
}
