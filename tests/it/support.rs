//! The in-process test server: a temporary directory holding a configuration, a zone file and
//! the fixture geo database, served by `app::run` on port-0 sockets of the test's own runtime.
//!
//! It does not speak DNS itself (that is `client.rs`) and never touches the real binary (that is
//! `cli.rs`). Every server is torn down by cancelling its shutdown token, so a failing test
//! cannot leave a server running behind it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Once;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use meridian::app::{self, Listeners};
use meridian::config::{ConfigError, Source};
use meridian::state::{Clock, Loaded, StateHandle};
use meridian::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::mmdb_fixture;

/// The name of the configuration file inside a test server's directory.
pub(crate) const CONFIG_FILE: &str = "meridian.yaml";
/// The zone file name the configurations below refer to.
pub(crate) const ZONE_FILE: &str = "example.com.zone";
/// The geo database file name the configurations below refer to.
pub(crate) const GEO_FILE: &str = "geo.mmdb";

/// The identity every test configuration announces through NSID and CHAOS `id.server`.
pub(crate) const IDENTITY: &str = "meridian-test";

/// `zones/example.yaml` with the fixture database and a fixed identity: the same five
/// datacenters, and `www.example.com` routed to the nearest one (TTL 30, one address).
pub(crate) const CONFIG: &str = r#"
server:
  identity: meridian-test
geo: { database: geo.mmdb }
zones:
  - origin: example.com
    file: example.com.zone
datacenters:
  us-east:  { latitude: 39.0438,  longitude: -77.4874,  country: US, continent: NA }
  us-west:  { latitude: 37.3382,  longitude: -121.8863, country: US, continent: NA }
  eu-west:  { latitude: 53.3498,  longitude: -6.2603,   country: IE, continent: EU }
  ap-south: { latitude: 1.3521,   longitude: 103.8198,  country: SG, continent: AS }
  sa-east:  { latitude: -23.5505, longitude: -46.6333,  country: BR, continent: SA }
services:
  www:
    name: www.example.com
    policy: nearest
    ttl: 30
    answers: 1
    order: [us-east, eu-west, us-west, ap-south, sa-east]
    pools:
      us-east:  { a: [192.0.2.1], aaaa: ["2001:db8::1"] }
      us-west:  { a: [192.0.2.2], aaaa: ["2001:db8::2"] }
      eu-west:  { a: [192.0.2.3], aaaa: ["2001:db8::3"] }
      ap-south: { a: [192.0.2.4], aaaa: ["2001:db8::4"] }
      sa-east:  { a: [192.0.2.5], aaaa: ["2001:db8::5"] }
"#;

/// The shipped example zone.
pub(crate) const ZONE: &str = include_str!("../../zones/example.com.zone");

/// How to start a test server.
pub(crate) struct Setup {
    config: String,
    zone: String,
    /// Keep state in this directory (to restart on it); default in memory.
    pub(crate) state_dir: Option<PathBuf>,
    /// Start drained.
    pub(crate) drained: bool,
    /// More files to write beside the configuration (name, text), e.g. another zone.
    pub(crate) files: Vec<(String, String)>,
    /// The control plane's clock: manual, starting at a fixed instant (share one to restart on it).
    pub(crate) clock: Clock,
}

impl Setup {
    /// A server on `config_yaml` and `zone_text`, state in memory, a manual clock.
    pub(crate) fn new(config_yaml: &str, zone_text: &str) -> Setup {
        Setup {
            config: config_yaml.to_owned(),
            zone: zone_text.to_owned(),
            state_dir: None,
            drained: false,
            files: Vec::new(),
            clock: Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        }
    }
}

/// A running in-process server and the directory it reads from.
pub(crate) struct TestServer {
    /// DNS/UDP on 127.0.0.1.
    pub(crate) udp: SocketAddr,
    /// DNS/TCP on 127.0.0.1 (the same port as `udp`).
    pub(crate) tcp: SocketAddr,
    /// DNS/UDP on [::1].
    pub(crate) udp6: SocketAddr,
    /// The control plane's HTTP address.
    pub(crate) http: SocketAddr,
    /// The control plane's clock: it moves only when a test advances it.
    pub(crate) clock: Clock,
    dir: tempfile::TempDir,
    state: StateHandle,
    shutdown: CancellationToken,
    /// `None` once `stop` has awaited it.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on `config_yaml` and `zone_text` (written as `meridian.yaml` and
    /// `example.com.zone`) with the standard fixture database as `geo.mmdb`.
    ///
    /// Panics when the configuration does not load: a test that wants a load error calls
    /// `Snapshot::load` or the binary instead.
    pub(crate) async fn start(config_yaml: &str, zone_text: &str) -> TestServer {
        TestServer::launch(Setup::new(config_yaml, zone_text)).await
    }

    /// Starts a server as `setup` says.
    pub(crate) async fn launch(setup: Setup) -> TestServer {
        init_tracing();
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::write(dir.path().join(CONFIG_FILE), &setup.config).expect("write the config");
        std::fs::write(dir.path().join(ZONE_FILE), &setup.zone).expect("write the zone");
        for (name, text) in &setup.files {
            std::fs::write(dir.path().join(name), text).expect("write a file of the setup");
        }
        std::fs::write(dir.path().join(GEO_FILE), mmdb_fixture::standard())
            .expect("write the geo database");

        let source = Source::File(dir.path().join(CONFIG_FILE));
        let loaded = match Loaded::load(&source) {
            Ok(loaded) => loaded,
            Err(error) => panic!("test configuration does not load:\n{error}"),
        };
        let store = match &setup.state_dir {
            Some(state_dir) => Store::open(state_dir).expect("open the state store"),
            None => Store::in_memory().expect("in-memory store"),
        };
        let addrs: [SocketAddr; 2] = [
            "127.0.0.1:0".parse().expect("literal address"),
            "[::1]:0".parse().expect("literal address"),
        ];
        let mut listeners = bind(&addrs);
        listeners
            .bind_control("127.0.0.1:0".parse().expect("literal address"))
            .expect("bind the control plane on loopback");
        let http = listeners
            .control
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .expect("bound HTTP listener");
        let udp = listeners.udp[0].local_addr().expect("bound UDP socket");
        let tcp = listeners.tcp[0].local_addr().expect("bound TCP listener");
        let udp6 = listeners.udp[1].local_addr().expect("bound UDP socket");
        assert_eq!(udp.port(), tcp.port(), "UDP and TCP share one port");

        let state = app::state_channel();
        let handle = state.0.clone();
        let shutdown = CancellationToken::new();
        let options = app::Options {
            source,
            loaded,
            store,
            clock: setup.clock.clone(),
            drained: setup.drained,
            log_levels: None,
        };
        // The sockets are bound already, so queries sent before the task first runs wait in the
        // socket buffers: no readiness polling is needed.
        let task = tokio::spawn(app::run(options, listeners, state, shutdown.clone()));
        TestServer {
            udp,
            tcp,
            udp6,
            http,
            clock: setup.clock,
            dir,
            state: handle,
            shutdown,
            task: Some(task),
        }
    }

    /// Moves the control plane's clock forward and has the server re-judge report freshness
    /// (as its once-a-second tick would); returns the generation serving afterwards.
    pub(crate) async fn advance(&self, by: Duration) -> u64 {
        self.clock.advance(by);
        self.state.refresh().await
    }

    /// A URL on the control plane.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Starts a server on the example configuration and zone.
    pub(crate) async fn example() -> TestServer {
        TestServer::start(CONFIG, ZONE).await
    }

    /// Asks the running server to reload its directory; on `Ok` the new snapshot is serving.
    pub(crate) async fn reload(&self) -> Result<u64, ConfigError> {
        self.state.reload().await
    }

    /// Replaces the configuration file (takes effect at the next reload).
    pub(crate) fn write_config(&self, config_yaml: &str) {
        self.write(CONFIG_FILE, config_yaml);
    }

    /// Replaces the zone file (takes effect at the next reload).
    pub(crate) fn write_zone(&self, zone_text: &str) {
        self.write(ZONE_FILE, zone_text);
    }

    /// The server's directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts the server down and returns what `app::run` returned.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("stop is called once");
        // app::run bounds its own drain by SHUTDOWN_GRACE; allow a little more on top.
        let grace = app::SHUTDOWN_GRACE + Duration::from_secs(5);
        tokio::time::timeout(grace, task)
            .await
            .expect("app::run returns within its shutdown grace")
            .expect("app::run does not panic")
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The task lives on the test's runtime and ends with it anyway; cancelling makes the
        // server stop at once, even when the runtime outlives this value.
        self.shutdown.cancel();
    }
}

/// Binds UDP and TCP on `addrs` with `Listeners::bind`.
fn bind(addrs: &[SocketAddr]) -> Listeners {
    Listeners::bind(addrs).unwrap_or_else(|error| panic!("bind sockets on loopback: {error:#}"))
}

/// Writes a fresh directory with `config_yaml`, the example zone and the fixture database, for
/// tests that load or run a configuration without an in-process server.
pub(crate) fn config_dir(config_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    std::fs::write(dir.path().join(CONFIG_FILE), config_yaml).expect("write the config");
    std::fs::write(dir.path().join(ZONE_FILE), ZONE).expect("write the zone");
    std::fs::write(dir.path().join(GEO_FILE), mmdb_fixture::standard())
        .expect("write the geo database");
    dir
}

/// One tracing subscriber for the whole test binary, writing through the test harness so that
/// a passing test's logs stay hidden. `RUST_LOG` overrides the default filter.
pub(crate) fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_test_writer()
            .init();
    });
}

/// An HTTP client for the control plane; the timeout makes a hung server fail the test.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Sends `request`: the status, and the body as JSON (a JSON string when it is not JSON).
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = request.send().await.expect("HTTP request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
