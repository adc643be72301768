//! Wiring: sockets, the first snapshot, the DNS server, the control plane, reloads and shutdown.
//!
//! [`run`] takes sockets that are already bound and a shutdown token, so tests hand it port-0
//! sockets and cancel it when done. Signals are wired separately ([`watch_signals`]) so that only
//! the real binary reacts to SIGHUP and SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, Source};
use crate::control::{self, Readiness};
use crate::dns::{DnsServer, Handler};
use crate::state::{Publisher, Shared, Snapshot};

/// How long in-flight queries get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bound sockets: DNS UDP and TCP on each configured address, and the control plane's.
pub struct Listeners {
    /// DNS/UDP sockets.
    pub udp: Vec<UdpSocket>,
    /// DNS/TCP listeners.
    pub tcp: Vec<TcpListener>,
    /// The control plane's HTTP listener, if it is to run.
    pub control: Option<TcpListener>,
}

impl Listeners {
    /// Binds UDP and TCP on every address. IPv6 sockets are IPv6-only, so `[::]:53` and
    /// `0.0.0.0:53` can be bound side by side.
    ///
    /// # Errors
    ///
    /// The first address that cannot be bound, with the reason.
    pub fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Listeners> {
        let mut listeners = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            control: None,
        };
        for &addr in addrs {
            let (udp, tcp) = bind_pair(addr)?;
            listeners.udp.push(UdpSocket::from_std(udp.into())?);
            listeners.tcp.push(TcpListener::from_std(tcp.into())?);
        }
        Ok(listeners)
    }

    /// Binds the control plane's HTTP listener.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub fn bind_control(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let socket = bind_socket(addr, socket2::Type::STREAM)
            .with_context(|| format!("binding HTTP on {addr}"))?;
        socket.listen(1024)?;
        self.control = Some(TcpListener::from_std(socket.into())?);
        Ok(())
    }
}

/// How many ports to try when port 0 gives a UDP port whose TCP twin is taken.
const PORT_ZERO_ATTEMPTS: usize = 32;

/// Binds UDP, then TCP on the port UDP got, so that port 0 gives one port for both. With port 0
/// the kernel picks a port free for UDP only; if TCP finds it busy, try another.
fn bind_pair(addr: SocketAddr) -> anyhow::Result<(socket2::Socket, socket2::Socket)> {
    let attempts = if addr.port() == 0 {
        PORT_ZERO_ATTEMPTS
    } else {
        1
    };
    for attempt in 1..=attempts {
        let udp = bind_socket(addr, socket2::Type::DGRAM)
            .with_context(|| format!("binding DNS/UDP on {addr}"))?;
        let tcp_addr = udp
            .local_addr()?
            .as_socket()
            .expect("an IP socket has an IP address");
        match bind_socket(tcp_addr, socket2::Type::STREAM) {
            Ok(tcp) => {
                tcp.listen(1024)?;
                return Ok((udp, tcp));
            }
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {
                continue;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("binding DNS/TCP on {tcp_addr}"));
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn bind_socket(addr: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if kind == socket2::Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Asks the running server to reload; answered with the new generation or the problems.
type ReloadRequest = oneshot::Sender<Result<u64, ConfigError>>;

/// Sends reload requests to a running server (SIGHUP, tests, later the control API).
#[derive(Clone)]
pub struct ReloadTrigger {
    requests: mpsc::Sender<ReloadRequest>,
}

/// The receiving end of [`ReloadTrigger`], handed to [`run`].
pub struct ReloadRequests {
    requests: mpsc::Receiver<ReloadRequest>,
}

/// A connected pair of reload trigger and receiver.
pub fn reload_channel() -> (ReloadTrigger, ReloadRequests) {
    let (tx, rx) = mpsc::channel(4);
    (
        ReloadTrigger { requests: tx },
        ReloadRequests { requests: rx },
    )
}

impl ReloadTrigger {
    /// Reloads configuration, zones and geo database; on success the new snapshot is serving
    /// when this returns.
    ///
    /// # Errors
    ///
    /// The problems that kept the new configuration out (the old one keeps serving).
    pub async fn reload(&self) -> Result<u64, ConfigError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || ConfigError {
            problems: vec![crate::config::Problem::new("server", "shutting down")],
        };
        self.requests.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Serves DNS from `first` on `listeners` until `shutdown` is cancelled, reloading from `source`
/// on each request.
///
/// # Errors
///
/// A socket failure of the DNS server.
pub async fn run(
    source: Source,
    first: Snapshot,
    listeners: Listeners,
    reloads: ReloadRequests,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for socket in &listeners.udp {
        info!("listening for DNS/UDP on {}", socket.local_addr()?);
    }
    for listener in &listeners.tcp {
        info!("listening for DNS/TCP on {}", listener.local_addr()?);
    }
    let readiness = Readiness::default();
    let control = match listeners.control {
        Some(listener) => {
            info!("listening for HTTP on {}", listener.local_addr()?);
            let router = control::router(readiness.clone());
            let stop = shutdown.clone().cancelled_owned();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            }))
        }
        None => None,
    };
    let tcp_idle_timeout = first.loaded.config.server.tcp_idle_timeout;
    log_published(&first);
    let (shared, publisher) = Shared::new(first);
    let dns = DnsServer::start(
        Handler::new(shared.clone()),
        listeners.udp,
        listeners.tcp,
        tcp_idle_timeout,
    );
    let reloader = tokio::spawn(serve_reloads(source, publisher, reloads, shutdown.clone()));
    readiness.set(true);

    shutdown.cancelled().await;
    info!("shutting down");
    readiness.set(false);
    reloader.abort();
    let stopped = async {
        let dns = dns.shutdown().await;
        if let Some(control) = control {
            control.await??;
        }
        dns
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, stopped).await {
        Ok(result) => {
            info!("shutdown complete");
            result
        }
        Err(_) => {
            warn!(grace = ?SHUTDOWN_GRACE, "in-flight queries did not finish in time");
            Ok(())
        }
    }
}

/// The reloader: the only task that publishes snapshots.
async fn serve_reloads(
    source: Source,
    publisher: Publisher,
    mut reloads: ReloadRequests,
    shutdown: CancellationToken,
) {
    while let Some(reply) = tokio::select! {
        request = reloads.requests.recv() => request,
        () = shutdown.cancelled() => None,
    } {
        let generation = publisher.current().generation + 1;
        let source_for_build = source.clone();
        let built =
            tokio::task::spawn_blocking(move || Snapshot::load(&source_for_build, generation))
                .await
                .expect("snapshot build does not panic");
        let outcome = match built {
            Ok(snapshot) => {
                log_published(&snapshot);
                publisher.publish(snapshot);
                Ok(generation)
            }
            Err(error) => {
                warn!(source = %source, problems = error.problems.len(), "reload failed, still serving the previous configuration");
                for problem in &error.problems {
                    warn!("{problem}");
                }
                Err(error)
            }
        };
        // The requester may have gone away (a signal has no one waiting); that is fine.
        let _ = reply.send(outcome);
    }
}

fn log_published(snapshot: &Snapshot) {
    let (zones, names) = snapshot.loaded.catalog.summary();
    info!(
        generation = snapshot.generation,
        zones,
        names,
        services = snapshot.loaded.config.services.len(),
        geo = snapshot.loaded.geo.description(),
        "snapshot published"
    );
}

/// Turns SIGHUP into reloads and SIGTERM/SIGINT into shutdown.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub fn watch_signals(reload: ReloadTrigger, shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    info!("SIGHUP: reloading");
                    let reload = reload.clone();
                    // The outcome is logged by the reloader; don't hold up the other signals.
                    tokio::spawn(async move { let _ = reload.reload().await; });
                }
                _ = terminate.recv() => { info!("SIGTERM"); shutdown.cancel(); break; }
                _ = interrupt.recv() => { info!("SIGINT"); shutdown.cancel(); break; }
            }
        }
    });
    Ok(())
}
