//! `app::Listeners::bind`: the sockets `app::run` is handed. Port 0 must give one port for UDP
//! and TCP, IPv6 sockets are IPv6-only, and a busy TCP port must not make a port-0 bind fail.

use std::net::SocketAddr;

use meridian::app::Listeners;

#[tokio::test]
async fn port_zero_gives_one_port_for_udp_and_tcp_on_each_address() {
    let addrs: [SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let listeners = Listeners::bind(&addrs).expect("bind");
    assert_eq!(listeners.udp.len(), 2);
    assert_eq!(listeners.tcp.len(), 2);
    for (udp, tcp) in listeners.udp.iter().zip(&listeners.tcp) {
        let (udp, tcp) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        assert_ne!(udp.port(), 0);
        assert_eq!(udp, tcp, "UDP and TCP on the same address and port");
    }
    assert!(listeners.udp[1].local_addr().unwrap().is_ipv6());
}

#[tokio::test]
async fn port_zero_survives_busy_tcp_ports() {
    // Occupy about 5% of the ephemeral TCP ports with listeners (connections in TIME_WAIT do
    // the same on a busy host). A UDP port-0 bind knows nothing of TCP, so roughly one in
    // twenty of the ports it gets is taken for TCP; `Listeners::bind` must then try another
    // port instead of failing. 200 binds all succeeding by luck has odds of about 1 in 50,000.
    let busy: Vec<std::net::TcpListener> = (0..1500)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("hold a TCP port"))
        .collect();
    let addrs: [SocketAddr; 1] = ["127.0.0.1:0".parse().unwrap()];
    let mut failures = Vec::new();
    for _ in 0..200 {
        match Listeners::bind(&addrs) {
            Ok(listeners) => {
                let udp = listeners.udp[0].local_addr().unwrap();
                let tcp = listeners.tcp[0].local_addr().unwrap();
                assert_eq!(udp.port(), tcp.port(), "one port for UDP and TCP");
            }
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    drop(busy);
    assert!(
        failures.is_empty(),
        "{} of 200 port-0 binds failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

#[tokio::test]
async fn udp_workers_answer_concurrent_clients_and_stop_cleanly() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use crate::client::Ask;
    use crate::support::{CONFIG, TestServer, ZONE};

    let config = CONFIG.replacen("server:\n", "server:\n  udp_workers: 3\n", 1);
    assert_ne!(
        config, CONFIG,
        "the test configuration has a server section"
    );
    let server = TestServer::start(&config, ZONE).await;
    // Clients on separate sockets, in parallel: each must get its own answer back, whichever
    // worker thread reads its query.
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let name = if i % 2 == 0 {
            "www.example.com"
        } else {
            "nothing-here.example.com"
        };
        let udp = server.udp;
        asks.spawn(async move { (i, Ask::new(name, RecordType::A).udp(udp).await) });
    }
    while let Some(joined) = asks.join_next().await {
        let (i, reply) = joined.expect("a query task");
        let expected = if i % 2 == 0 {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        assert_eq!(reply.metadata.response_code, expected, "query {i}");
    }
    server
        .stop()
        .await
        .expect("clean shutdown with UDP workers");
}

/// Several UDP workers count into shards of their own, summed at scrape time: every query is
/// counted once, whichever worker answered it.
#[tokio::test]
async fn udp_workers_count_every_query_exactly() {
    use hickory_proto::rr::RecordType;

    use crate::client::Ask;
    use crate::control::get_with;
    use crate::support::{CONFIG, TestServer, ZONE};

    let config = CONFIG.replacen("server:\n", "server:\n  udp_workers: 3\n", 1);
    let server = TestServer::start(&config, ZONE).await;
    let mut asks = tokio::task::JoinSet::new();
    let n_queries = 90;
    for i in 0..n_queries {
        let name = if i % 3 == 0 {
            "nothing-here.example.com"
        } else {
            "www.example.com"
        };
        let udp = server.udp;
        asks.spawn(async move { Ask::new(name, RecordType::A).udp(udp).await });
    }
    while let Some(joined) = asks.join_next().await {
        joined.expect("a query task");
    }
    let (_, metrics) = get_with(&server, "/metrics", None).await;
    let sum = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(prefix))
            .map(|line| {
                let (_, value) = line.rsplit_once(' ').expect("a sample");
                value.parse::<f64>().expect("a number")
            })
            .sum()
    };
    assert_eq!(
        sum("meridian_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"}"),
        60.0,
        "{metrics}"
    );
    assert_eq!(
        sum("meridian_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"}"),
        30.0,
        "{metrics}"
    );
    assert_eq!(
        sum("meridian_dns_query_duration_seconds_count"),
        90.0,
        "{metrics}"
    );
    // Each routed answer is counted under its service and first datacenter.
    assert_eq!(sum("meridian_dns_answers_total{"), 60.0, "{metrics}");
    server.stop().await.expect("clean shutdown");
}
