//! Hot-path benchmarks: one geo query through `Handler::answer`, what the UDP and TCP loops call (bytes in: decode, locate, route, encode, count; bytes out),
//! one static query, the routing core alone, and the banned-query check; the geo query also
//! with the traffic record on (one in 16 sampled, and every query), and `Traffic::record` alone,
//! and with the query log off and on at 1 %.
//!
//! Run with `cargo bench --bench query_path`. The handler benchmarks use the shipped example
//! (the embedded country database), with ECS networks spread over the whole IPv4 space so that
//! lookups walk different parts of the tree, as real traffic does. `MERIDIAN_BENCH_CONFIG=path`
//! runs them against another configuration instead (e.g. the one `benches/scale/gen.py` writes,
//! with the City database), asking for its first service.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian::config::Source;
use meridian::config::{QueryLogConfig, QueryLogOutput, TrafficConfig};
use meridian::dns::{Handler, Transport};
use meridian::metrics::Metrics;
use meridian::querylog::{Output, QueryLog};
use meridian::routing::{Client, Family, ServiceId};
use meridian::state::{Banned, Shared, Snapshot};
use meridian::store::StoredBan;
use meridian::traffic::Traffic;

fn query_bytes(name: &str, qtype: RecordType, ecs: Option<(Ipv4Addr, u8)>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((addr, prefix)) = ecs {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                IpAddr::V4(addr),
                prefix,
                0,
            )));
    }
    message.set_edns(edns);
    message.to_vec().unwrap()
}

fn benches(c: &mut Criterion) {
    let source = std::env::var_os("MERIDIAN_BENCH_CONFIG")
        .map_or(Source::Example, |path| Source::File(path.into()));
    let snapshot = Snapshot::load(&source, 1).expect("benchmark snapshot");
    let service_name = format!("{}.", snapshot.loaded.config.services[0].name);
    let (shared, _publisher) = Shared::new(snapshot);
    // Widened now rather than by the publisher's thread while the benchmarks run, so every
    // query sees the maps a server serves soon after it publishes them.
    shared.load().routing.widen_scopes();
    let handler = Handler::new(shared.clone(), std::sync::Arc::new(Metrics::new()));
    let src: SocketAddr = "192.0.2.53:5300".parse().unwrap();

    // 4096 /24 networks spread over the IPv4 unicast space (a fixed multiplicative sequence).
    let geo_queries: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let net = (i.wrapping_mul(2_654_435_761) % 0xdf00_0000 + 0x0100_0000) & 0xffff_ff00;
            query_bytes(
                &service_name,
                RecordType::A,
                Some((Ipv4Addr::from(net), 24)),
            )
        })
        .collect();
    let mut i = 0;
    let mut reply = Vec::with_capacity(512);
    c.bench_function("handler/geo_query_varied_ecs", |b| {
        b.iter(|| {
            i = (i + 1) % geo_queries.len();
            handler.answer(&geo_queries[i], src, Transport::Udp, &mut reply)
        })
    });

    // The same with the traffic record on: one in 16 (the default) and every query, with a
    // collector thread draining the channel every 100 ms as the server's task does.
    for one_in in [16, 1] {
        let traffic = Traffic::new(TrafficConfig {
            sample_one_in: one_in,
            window: std::time::Duration::from_secs(600),
            max_networks: 50_000,
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = {
            let (traffic, stop) = (traffic.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    traffic.collect(std::time::Instant::now());
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            })
        };
        // The record alone: what a routed answer adds.
        let config = shared.load().loaded.config.clone();
        let mut n = 0u32;
        c.bench_function(&format!("traffic/record_1_in_{one_in}"), |b| {
            b.iter(|| {
                n = n.wrapping_add(256);
                traffic.record(&config, ServiceId(0), IpAddr::V4(Ipv4Addr::from(n)), 24)
            })
        });
        let sampling = handler.clone().with_traffic(Some(traffic));
        c.bench_function(
            &format!("handler/geo_query_varied_ecs_traffic_1_in_{one_in}"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % geo_queries.len();
                    sampling.answer(&geo_queries[i], src, Transport::Udp, &mut reply)
                })
            },
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        collector.join().expect("the collector stops");
    }

    // The query log: off (the default; one atomic load per query), and on at 1 % (a sampled
    // query's bytes copied and offered to the writer thread, which describes it and writes the
    // line to /dev/null, on its own thread).
    let metrics = Metrics::new();
    for (label, per_million) in [("off", 0), ("1_percent", 10_000)] {
        let config = QueryLogConfig {
            output: QueryLogOutput::File("/dev/null".to_owned()),
            per_million,
            queue_lines: 4096,
        };
        let log = QueryLog::start(
            &config,
            Output::File("/dev/null".into()),
            metrics.samples().clone(),
        )
        .expect("the query log starts");
        let logging = handler.clone().with_query_log(Some(log));
        c.bench_function(
            &format!("handler/geo_query_varied_ecs_querylog_{label}"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % geo_queries.len();
                    logging.answer(&geo_queries[i], src, Transport::Udp, &mut reply)
                })
            },
        );
    }

    let static_query = query_bytes("ns1.example.com.", RecordType::A, None);
    c.bench_function("handler/static_query", |b| {
        b.iter(|| handler.answer(&static_query, src, Transport::Udp, &mut reply))
    });

    // Locating and resolving, with the scope: what a query does besides DNS.
    let snapshot = shared.load();
    let geo = &snapshot.loaded.geo;
    let clients: Vec<IpAddr> = (0..4096u32)
        .map(|i| {
            let net = (i.wrapping_mul(2_654_435_761) % 0xdf00_0000 + 0x0100_0000) & 0xffff_ff00;
            IpAddr::V4(Ipv4Addr::from(net))
        })
        .collect();
    let mut i = 0;
    c.bench_function("routing/locate_and_resolve_nearest", |b| {
        b.iter(|| {
            i = (i + 1) % clients.len();
            let client = Client::new(clients[i], geo.lookup(clients[i]), 24);
            black_box(
                snapshot
                    .routing
                    .resolve(ServiceId(0), &client, Family::A)
                    .prefix_len,
            )
        })
    });

    // The banned-query check every query passes first: with no rule (the usual case), and with
    // four rules that do not match (each reads the question).
    let no_rules = Banned::default();
    c.bench_function("banned/check_no_rules", |b| {
        b.iter(|| black_box(no_rules.check(black_box(&geo_queries[7]))))
    });
    let stored: Vec<(String, StoredBan)> = ["a.example.net", "b.example.net", "c.example.net"]
        .iter()
        .map(|suffix| StoredBan {
            name: None,
            suffix: Some((*suffix).to_owned()),
            qtype: None,
            offset: None,
            pattern: None,
            action: "refuse".to_owned(),
        })
        .chain([StoredBan {
            name: None,
            suffix: None,
            qtype: Some(255),
            offset: None,
            pattern: None,
            action: "drop".to_owned(),
        }])
        .enumerate()
        .map(|(i, rule)| (i.to_string(), rule))
        .collect();
    let (four_rules, _) = Banned::compile(stored.iter().map(|(i, r)| (i, r)), &Banned::default());
    c.bench_function("banned/check_four_rules_no_match", |b| {
        b.iter(|| black_box(four_rules.check(black_box(&geo_queries[7]))))
    });
}

criterion_group!(query_path, benches);
criterion_main!(query_path);
