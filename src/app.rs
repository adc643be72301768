//! Wiring: sockets, the state manager, the DNS server, the control plane and shutdown.
//!
//! [`run`] takes sockets that are already bound and a shutdown token, so tests hand it port-0
//! sockets and cancel it when done. Signals are wired separately ([`watch_signals`]) so that only
//! the real binary reacts to SIGHUP and SIGTERM.
//! Under systemd (`Type=notify`) the server says READY=1 once it serves, RELOADING=1 and READY=1
//! around a SIGHUP reload, and STOPPING=1 when it begins to stop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{ETCD_ENDPOINTS_ENV, QueryLogOutput, Source, StateConfig};
use crate::control::{self, ControlState};
use crate::dns::{DnsServer, Handler};
use crate::dns::{Loaded, Manager};
use crate::fleet::Fleet;
use crate::metrics::{ErrorKind, InternalError, Metrics, panic_message};
use crate::querylog::{self, QueryLog};
use crate::state::{Clock, Readiness, StateCommands, StateHandle, unix_ms};
use crate::store::{AuditEntry, Change, Store};
use crate::traffic::Traffic;

pub use crate::state::state_channel;

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
    } else if addr.port() != 0 {
        // Each DNS/UDP worker binds its own socket on this address (`dns::DnsServer`). Not on
        // port 0: Linux may then hand out a port that another `SO_REUSEPORT` socket of the same
        // user holds (tests binding in parallel); the workers share one socket instead.
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// What a server runs with besides its sockets.
pub struct Options {
    /// Where the configuration comes from (and reloads re-read).
    pub source: Source,
    /// The configuration, zones and geo database, already loaded.
    pub loaded: Loaded,
    /// The durable state store.
    pub store: Store,
    /// The control plane's clock.
    pub clock: Clock,
    /// Start drained (`/readyz` fails until an operator undrains).
    pub drained: bool,
    /// The log filter's runtime handle; `None` when logging cannot be changed (`PUT /v1/log`
    /// answers 503).
    pub log_levels: Option<Arc<control::LogLevels>>,
}

/// Serves DNS and the control plane until `shutdown` is cancelled. `state` is the pair from
/// [`state_channel`]; its handle is what tests and signals use to reload.
///
/// # Errors
///
/// The store cannot be read, or a socket of the DNS server failed.
pub async fn run(
    options: Options,
    listeners: Listeners,
    state: (StateHandle, StateCommands),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (handle, commands) = state;
    for socket in &listeners.udp {
        info!("listening for DNS/UDP on {}", socket.local_addr()?);
    }
    for listener in &listeners.tcp {
        info!("listening for DNS/TCP on {}", listener.local_addr()?);
    }
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let store = Arc::new(options.store);
    let server_config = options.loaded.config.server.clone();
    let backend = state_backend(&options.loaded.config.state);
    for deprecated in &server_config.deprecations {
        warn!(setting = %deprecated.path, "{}", deprecated.message);
    }
    // `server.query_log` is read at start (its rate changes through `PUT /v1/querylog`); a
    // file is opened now, so that a path that cannot be written stops the start.
    let query_log_output = match &server_config.query_log.output {
        QueryLogOutput::Stderr => querylog::Output::Stderr,
        QueryLogOutput::File(path) => querylog::Output::File(options.source.resolve(path)),
    };
    let query_log = QueryLog::start(
        &server_config.query_log,
        query_log_output.clone(),
        metrics.samples().clone(),
    )
    .with_context(|| format!("opening the query log {query_log_output}"))?;
    let (manager, shared) = Manager::start(
        options.source,
        options.loaded,
        store.clone(),
        options.clock.clone(),
        metrics.clone(),
        readiness.clone(),
    )
    .context("reading the state store")?;
    let (manager, fleet) = match backend {
        StateConfig::Embedded => (manager, None),
        StateConfig::Etcd(etcd) => {
            let fleet = Fleet::connect(&etcd)
                .await
                .with_context(|| format!("connecting to etcd at {}", etcd.endpoints.join(",")))?;
            (manager.with_fleet(fleet.clone()), Some(fleet))
        }
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(watched(
        "state-manager",
        tokio::spawn(manager.run(commands, shutdown.clone())),
        metrics.clone(),
        options.clock.clone(),
    ));
    // `server.traffic` is read at start, like `server.rrl`.
    let traffic = Traffic::new(server_config.traffic);
    if traffic.is_on() {
        tasks.spawn(watched(
            "traffic-collector",
            tokio::spawn(collect_traffic(traffic.clone(), shutdown.clone())),
            metrics.clone(),
            options.clock.clone(),
        ));
    }
    if options.drained {
        let entry = AuditEntry {
            unix_ms: unix_ms(options.clock.now()),
            actor: "meridian".to_owned(),
            role: "startup".to_owned(),
            action: "drain-instance".to_owned(),
            target: "instance".to_owned(),
            detail: serde_json::json!({ "flag": "--drained" }),
        };
        handle
            .apply(Change::InstanceDrain { drained: true }, entry, true)
            .await
            .context("draining the instance (--drained)")?;
    }
    let control = match listeners.control {
        Some(listener) => {
            info!("listening for HTTP on {}", listener.local_addr()?);
            let router = control::router(ControlState {
                shared: shared.clone(),
                handle: handle.clone(),
                store,
                metrics: metrics.clone(),
                clock: options.clock,
                readiness: readiness.clone(),
                limiter: Arc::default(),
                log_levels: options.log_levels.clone(),
                traffic: traffic.clone(),
                query_log: query_log.clone(),
                fleet,
            });
            let serving = control::serve(
                listener,
                router,
                shared.clone(),
                metrics.clone(),
                shutdown.clone(),
            );
            Some(tokio::spawn(serving))
        }
        None => None,
    };
    // `server.rrl` and `server.tcp` are read at start; a reload does not change them.
    let dns = DnsServer::start(
        Handler::new(shared, metrics.clone())
            .with_rrl(server_config.rrl.clone())
            .with_traffic(Some(traffic))
            .with_query_log(Some(query_log)),
        (listeners.udp, server_config.udp_workers),
        listeners.tcp,
        &server_config.tcp,
        metrics,
    )
    .context("starting the DNS/UDP workers")?;
    readiness.set(true);
    // The first snapshot is published (Manager::start) and every socket is bound and served:
    // this is the moment `Type=notify` waits for.
    notify_systemd(&[NotifyState::Ready, NotifyState::Status("serving")]);

    shutdown.cancelled().await;
    info!("shutting down");
    notify_systemd(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    readiness.set(false);
    let stopped = async {
        let dns = dns.shutdown().await;
        if let Some(control) = control {
            control.await??;
        }
        while tasks.join_next().await.is_some() {}
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

/// The state backend: the configuration's `state`, with the endpoints of
/// `MERIDIAN_ETCD_ENDPOINTS` when set (read at start; a reload does not change the backend).
fn state_backend(configured: &StateConfig) -> StateConfig {
    let env = std::env::var(ETCD_ENDPOINTS_ENV).ok();
    configured.clone().with_endpoints_override(env.as_deref())
}

/// Awaits the background task `name`; if it panicked, logs, counts and keeps the panic (for
/// `GET /v1/errors`). The rest of the server goes on: DNS answers from the last published
/// snapshot even without the state manager.
async fn watched(name: &'static str, task: JoinHandle<()>, metrics: Arc<Metrics>, clock: Clock) {
    if let Err(error) = task.await
        && error.is_panic()
    {
        let message = panic_message(error.into_panic().as_ref());
        error!(task = name, %message, "a background task panicked");
        metrics.keep_error(InternalError {
            unix_ms: unix_ms(clock.now()),
            kind: ErrorKind::Panic,
            context: format!("task {name}"),
            message,
        });
    }
}

/// Tells the service manager how the service is doing, when it asked to be told (systemd's
/// `Type=notify` sets `$NOTIFY_SOCKET`; elsewhere this does nothing). A failure to notify does
/// not stop the server: it is logged, and systemd's own start timeout reports a missing READY.
fn notify_systemd(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Turns SIGHUP into reloads and SIGTERM/SIGINT into shutdown. Under systemd, a SIGHUP reload
/// is announced with RELOADING=1 and its end with READY=1.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub fn watch_signals(reload: StateHandle, shutdown: CancellationToken) -> anyhow::Result<()> {
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
                    let shutdown = shutdown.clone();
                    // The outcome is logged by the reloader; don't hold up the other signals.
                    tokio::spawn(async move {
                        // systemd shows the unit as "reloading" until READY=1 follows; it
                        // matches the two by MONOTONIC_USEC (sd_notify(3)).
                        let mut reloading = vec![NotifyState::Reloading];
                        reloading.extend(NotifyState::monotonic_usec_now().ok());
                        notify_systemd(&reloading);
                        let status = match reload.reload().await {
                            Ok(_) => "serving",
                            Err(_) => "serving; the last reload failed, see the log",
                        };
                        // A failed reload keeps serving the previous configuration, so the
                        // service is ready either way, unless it has begun to stop meanwhile.
                        if !shutdown.is_cancelled() {
                            notify_systemd(&[NotifyState::Ready, NotifyState::Status(status)]);
                        }
                    });
                }
                _ = terminate.recv() => { info!("SIGTERM"); shutdown.cancel(); break; }
                _ = interrupt.recv() => { info!("SIGINT"); shutdown.cancel(); break; }
            }
        }
    });
    Ok(())
}

/// Moves sampled queries into the traffic record's window a few times a second, off the query
/// path, until `shutdown`.
async fn collect_traffic(traffic: Arc<Traffic>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = ticks.tick() => traffic.collect(std::time::Instant::now()),
            () = shutdown.cancelled() => return,
        }
    }
}
