//! Fleet convergence: three meridian instances (in this process, the shipped example
//! configuration) on a real three-member etcd cluster (loopback, data in a temporary directory).
//!
//! 1. Convergence: a report through one instance (each in turn) flips eu-west between healthy and
//!    down; the time from sending the report until all three instances answer
//!    `www.example.com` for a GB client with the new address, over 1,000 writes (p50, p99, max).
//! 2. Throughput: reports from every datacenter's agent through all three instances at once
//!    (8 concurrent requests per instance) for 5 seconds; accepted reports per second.
//!
//! Run with `cargo test --bench fleet` (a debug build) or `cargo bench --bench fleet` (needs the
//! `etcd` binary: `apt-get install etcd-server`). `FLEET_BENCH_WRITES=N` changes the number of
//! writes (1,000 by default). A refused write stops the run with its status and body.

#![allow(clippy::print_stdout)] // The figures are this benchmark's output.

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/etcd.rs"]
mod etcd;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use meridian::app::{self, Listeners};
use meridian::config::{EXAMPLE_CONFIG, Source};
use meridian::state::{Clock, Loaded};
use meridian::store::Store;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const EU_WEST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const US_EAST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DATACENTERS: [&str; 5] = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];

struct Instance {
    udp: SocketAddr,
    http: SocketAddr,
}

/// Rate limits high enough that no request of the benchmark is refused by them.
const UNLIMITED: &str = "  rate_limit: { per_second: 1000000, burst: 1000000 }\n  address_rate_limit: { per_second: 1000000, burst: 1000000 }\n";

/// The shipped example with a `state` section naming `etcd`, written into `dir`.
fn example_on(etcd: &etcd::Etcd, dir: &Path) -> Source {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let geo = root.join("geodata/geo-whois-asn-country.mmdb");
    let endpoints: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    // The example's per-token limit (20 requests/s, burst 40) and per-address limit (100/s)
    // protect a real deployment; every write here comes from one address with one token, so a
    // fast run empties their buckets (the likely end of the earlier 1,000-write runs after ~250
    // writes). The benchmark measures the fleet, not the limiter.
    let config = format!(
        "{}\nstate:\n  backend: etcd\n  etcd: {{ endpoints: [{}], prefix: /bench }}\n",
        EXAMPLE_CONFIG
            .replace(
                "../geodata/geo-whois-asn-country.mmdb",
                &geo.display().to_string()
            )
            .replace("\ncontrol:\n", &format!("\ncontrol:\n{UNLIMITED}")),
        endpoints.join(", ")
    );
    std::fs::write(dir.join("meridian.yaml"), config).expect("write the configuration");
    std::fs::copy(
        root.join("zones/example.com.zone"),
        dir.join("example.com.zone"),
    )
    .expect("copy the zone");
    Source::File(dir.join("meridian.yaml"))
}

async fn start_instance(source: &Source, shutdown: &CancellationToken) -> Instance {
    let source = source.clone();
    let loaded = Loaded::load(&source).expect("the example loads");
    let mut listeners =
        Listeners::bind(&["127.0.0.1:0".parse().expect("address")]).expect("bind DNS");
    listeners
        .bind_control("127.0.0.1:0".parse().expect("address"))
        .expect("bind HTTP");
    let udp = listeners.udp[0].local_addr().expect("bound");
    let http = listeners
        .control
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .expect("bound");
    let options = app::Options {
        source,
        loaded,
        store: Store::in_memory().expect("memory store"),
        clock: Clock::System,
        drained: false,
        log_levels: None,
    };
    tokio::spawn(app::run(
        options,
        listeners,
        app::state_channel(),
        shutdown.clone(),
    ));
    Instance { udp, http }
}

fn query() -> Vec<u8> {
    let mut message = Message::new(0x2a2a, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(
        Name::from_str("www.example.com.").expect("name"),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            IpAddr::V4(Ipv4Addr::new(81, 2, 69, 0)),
            24,
            0,
        )));
    message.set_edns(edns);
    message.to_vec().expect("encode")
}

async fn answer(socket: &UdpSocket, server: SocketAddr, query: &[u8]) -> Option<Ipv4Addr> {
    socket.send_to(query, server).await.ok()?;
    let mut buf = [0u8; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let reply = Message::from_vec(&buf[..len]).ok()?;
    reply.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

/// Sends a report; `Err` says why it was not accepted (the status and body, or the error).
async fn report(
    http: &reqwest::Client,
    server: SocketAddr,
    dc: &str,
    healthy: bool,
) -> Result<(), String> {
    let response = http
        .put(format!("http://{server}/v1/datacenters/{dc}/report"))
        .bearer_auth(format!("example-{dc}-token"))
        .json(&serde_json::json!({"healthy": healthy, "capacity": 100, "load": 10}))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(format!("{status}: {body}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let writes: usize = std::env::var("FLEET_BENCH_WRITES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let Some(etcd) = etcd::Etcd::start("fleet benchmark", 3).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = example_on(&etcd, dir.path());
    let shutdown = CancellationToken::new();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(start_instance(&config, &shutdown).await);
    }
    let http = reqwest::Client::new();
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let query = query();
    // Wait until every instance has read etcd and answers.
    for instance in &instances {
        let deadline = Instant::now() + Duration::from_secs(30);
        while answer(&socket, instance.udp, &query).await.is_none() {
            assert!(Instant::now() < deadline, "an instance does not answer");
        }
    }
    if let Err(why) = report(&http, instances[0].http, "eu-west", true).await {
        panic!("the first report was refused: {why}");
    }

    let mut times = Vec::with_capacity(writes);
    for i in 0..writes {
        let healthy = i % 2 == 1;
        let expected = if healthy { EU_WEST } else { US_EAST };
        let writer = &instances[i % 3];
        let start = Instant::now();
        if let Err(why) = report(&http, writer.http, "eu-west", healthy).await {
            panic!("write {i} refused: {why}");
        }
        for instance in &instances {
            let deadline = start + Duration::from_secs(10);
            while answer(&socket, instance.udp, &query).await != Some(expected) {
                assert!(Instant::now() < deadline, "write {i} did not converge");
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "convergence over {writes} writes (write on one instance -> all three answer by it): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );

    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(5);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, instance) in instances.iter().enumerate() {
        for k in 0..8 {
            let (http, server) = (http.clone(), instance.http);
            let (accepted, refused) = (accepted.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                let dc = DATACENTERS[(n * 8 + k) % DATACENTERS.len()];
                while start.elapsed() < run_for {
                    match report(&http, server, dc, true).await {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => {
                            if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                                println!("first refused report: {why}");
                            }
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("a load task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "throughput: {:.0} reports/s accepted through the fleet ({} in {elapsed:.1} s, {} refused; 24 concurrent requests over 3 instances)",
        accepted.load(Ordering::Relaxed) as f64 / elapsed,
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(etcd);
}
