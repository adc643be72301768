//! The DNS transport under abuse, over real sockets: response rate limiting on UDP
//! (`server.rrl`), DNS/TCP limits (`server.tcp`: the connection budget and per-client cap, the message timeout,
//! pipelining in order, garbage frames), and FORMERR replies that keep the question and an OPT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::client::{Ask, decode};
use crate::support::{CONFIG, TestServer, ZONE};

/// `CONFIG` with `extra` added to its `server` section.
fn config_with(extra: &str) -> String {
    CONFIG.replacen(
        "server:\n  identity: meridian-test\n",
        &format!("server:\n  identity: meridian-test\n{extra}"),
        1,
    )
}

/// The value of the series `series` (name and labels, as exported) in the server's metrics.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Sends `n` copies of `ask` from a socket bound to `from`, then gathers every reply that comes
/// back within a short wait: (full answers, TC replies).
async fn flood(server: SocketAddr, from: &str, ask: &Ask, n: usize) -> (usize, usize) {
    let socket = UdpSocket::bind(format!("{from}:0")).await.expect("bind");
    socket.connect(server).await.expect("connect");
    let bytes = ask.to_bytes();
    for _ in 0..n {
        socket.send(&bytes).await.expect("send");
    }
    let (mut full, mut tc) = (0, 0);
    let mut buf = vec![0; 65_535];
    while let Ok(Ok(len)) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await
    {
        let reply = decode(&buf[..len]);
        assert_eq!(reply.metadata.id, ask.id());
        assert_eq!(
            reply.queries.len(),
            1,
            "the question is echoed, slipped or not"
        );
        if reply.metadata.truncation {
            assert!(
                reply.answers.is_empty(),
                "a slipped reply carries no records"
            );
            tc += 1;
        } else {
            assert_eq!(reply.answers.len(), 1);
            full += 1;
        }
    }
    (full, tc)
}

#[tokio::test]
async fn a_udp_flood_is_limited_and_slipped_while_another_network_is_answered_in_full() {
    let config = config_with("  rrl: { responses_per_second: 5, slip: 2 }\n");
    let server = TestServer::start(&config, ZONE).await;
    let ask = Ask::new("mail.example.com", RecordType::A);
    let started = Instant::now();
    let (full, tc) = flood(server.udp, "127.0.0.1", &ask, 60).await;
    // At most one second's worth per second the flood lasted (plus the one it started in).
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(full >= 5, "the first 5 are answered: {full}");
    assert!(
        full <= 5 * (seconds + 1),
        "{full} full answers in {seconds}s"
    );
    assert!(tc >= 10, "every 2nd limited response slips as TC: {tc}");
    assert!(full + tc < 60, "the rest are dropped: {full} + {tc}");
    // 127.0.1.0/24 is another client network: its answers come in full.
    let (full, tc) = flood(server.udp, "127.0.1.1", &ask, 5).await;
    assert_eq!((full, tc), (5, 0));
    // TCP is never limited: the client has proved its address.
    let reply = ask.tcp(server.tcp).await;
    assert_eq!(reply.answers.len(), 1);
    assert!(
        metric(
            &server,
            r#"meridian_dns_rrl_limited_total{action="slipped"}"#
        )
        .await
            >= 10.0
    );
    assert!(
        metric(
            &server,
            r#"meridian_dns_rrl_limited_total{action="dropped"}"#
        )
        .await
            >= 10.0
    );
}

#[tokio::test]
async fn without_rrl_a_flood_is_answered_in_full() {
    let server = TestServer::start(CONFIG, ZONE).await;
    let ask = Ask::new("mail.example.com", RecordType::A);
    let (full, tc) = flood(server.udp, "127.0.0.1", &ask, 30).await;
    assert_eq!((full, tc), (30, 0));
}

/// Opens a connection and waits until the server has closed it, or `limit` passes: how long it
/// stayed open, `None` when still open at `limit`.
async fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0; 512];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_stalled_message_is_closed_after_the_message_timeout_not_the_idle_timeout() {
    let server = TestServer::start(CONFIG, ZONE).await;
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    // A length prefix saying 40 bytes, then three of them, then nothing.
    stream.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    let closed = time_to_close(&mut stream, Duration::from_secs(3)).await;
    let closed = closed.expect("closed well before the 10 s idle timeout");
    assert!(
        closed >= Duration::from_millis(400) && closed < Duration::from_millis(1500),
        "closed after {closed:?}, expected about 500 ms"
    );
    assert_eq!(
        metric(
            &server,
            r#"meridian_dns_tcp_timeouts_total{timeout="message"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn an_idle_connection_waits_for_the_idle_timeout() {
    let config = config_with("  tcp: { idle_timeout_ms: 800 }\n");
    let server = TestServer::start(&config, ZONE).await;
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    let closed = time_to_close(&mut stream, Duration::from_secs(3)).await;
    let closed = closed.expect("closed by the idle timeout");
    assert!(
        closed >= Duration::from_millis(700),
        "closed after {closed:?}"
    );
    assert_eq!(
        metric(
            &server,
            r#"meridian_dns_tcp_timeouts_total{timeout="idle"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn connections_over_the_per_client_cap_are_closed_on_accept() {
    let config = config_with("  tcp: { max_connections_per_client: 3 }\n");
    let server = TestServer::start(&config, ZONE).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.tcp).await.unwrap());
    }
    // Each held connection still answers.
    let ask = Ask::new("mail.example.com", RecordType::A);
    let mut extra = TcpStream::connect(server.tcp).await.unwrap();
    let closed = time_to_close(&mut extra, Duration::from_secs(2)).await;
    assert!(
        closed.is_some(),
        "the 4th connection from one address is closed"
    );
    assert_eq!(
        metric(
            &server,
            r#"meridian_dns_tcp_refused_total{reason="max_connections_per_client"}"#
        )
        .await,
        1.0
    );
    // Closing one frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = ask.tcp(server.tcp).await;
    assert_eq!(reply.answers.len(), 1);
}

#[tokio::test]
async fn connections_over_the_total_cap_wait_until_one_closes() {
    let config = config_with("  tcp: { max_connections: 2 }\n");
    let server = TestServer::start(&config, ZONE).await;
    let a = TcpStream::connect(server.tcp).await.unwrap();
    let _b = TcpStream::connect(server.tcp).await.unwrap();
    // The third connects (the kernel's backlog accepts it) but is not served yet.
    let ask = Ask::new("mail.example.com", RecordType::A);
    let mut third = TcpStream::connect(server.tcp).await.unwrap();
    third.write_all(&framed(&[&ask])).await.unwrap();
    let mut len = [0; 2];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read_exact(&mut len)).await;
    assert!(early.is_err(), "no answer while two connections are open");
    // Once one closes, the waiting connection is accepted and answered.
    drop(a);
    let reply = read_message(&mut third).await;
    assert_eq!(reply.metadata.id, ask.id());
    assert_eq!(reply.answers.len(), 1);
}

/// Reads one length-prefixed message.
async fn read_message(stream: &mut TcpStream) -> Message {
    let mut len = [0; 2];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut len))
        .await
        .expect("a reply in time")
        .expect("read the length");
    let mut body = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.expect("read the reply");
    decode(&body)
}

fn framed(asks: &[&Ask]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for ask in asks {
        let message = ask.to_bytes();
        bytes.extend_from_slice(&u16::try_from(message.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&message);
    }
    bytes
}

#[tokio::test]
async fn pipelined_queries_are_answered_in_order_and_garbage_closes_the_connection() {
    let server = TestServer::start(CONFIG, ZONE).await;
    let asks = [
        Ask::new("mail.example.com", RecordType::A),
        Ask::new("example.com", RecordType::SOA),
        Ask::new("nothere.example.com", RecordType::A),
        Ask::new("ns1.example.com", RecordType::AAAA),
    ];
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    // All four in one write: they arrive together and are answered one by one, in order.
    stream
        .write_all(&framed(&asks.iter().collect::<Vec<_>>()))
        .await
        .unwrap();
    for ask in &asks {
        let reply = read_message(&mut stream).await;
        assert_eq!(reply.metadata.id, ask.id(), "replies in the order asked");
    }
    // A frame too short to hold a header: the connection is closed, nothing is answered.
    stream.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    assert!(
        time_to_close(&mut stream, Duration::from_secs(2))
            .await
            .is_some()
    );
}

/// `ask` with the OPT record's RDLENGTH covering an option whose length runs past its end.
fn with_overrunning_option(ask: &Ask) -> Vec<u8> {
    let mut bytes = ask.to_bytes();
    // The query ends with the OPT record: root name, type, class, TTL, RDLENGTH 0 (no options).
    let n = bytes.len();
    assert_eq!(&bytes[n - 2..], &[0, 0], "an OPT record without options");
    // RDLENGTH 4: option code 8 (ECS), option length 100, and no data.
    bytes[n - 2..].copy_from_slice(&[0, 4]);
    bytes.extend_from_slice(&[0, 8, 0, 100]);
    bytes
}

#[tokio::test]
async fn formerr_keeps_the_question_and_an_opt_record() {
    let server = TestServer::start(CONFIG, ZONE).await;
    let ask = Ask::new("mail.example.com", RecordType::A).edns(1232);
    let bytes = with_overrunning_option(&ask);
    for reply in [
        crate::client::send_udp(server.udp, &bytes).await,
        crate::client::send_tcp(server.tcp, &bytes).await,
    ] {
        let reply = decode(&reply);
        assert_eq!(reply.metadata.id, ask.id());
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.queries.len(), 1, "the question is kept");
        assert_eq!(reply.queries[0].name().to_ascii(), "mail.example.com.");
        assert!(reply.edns.is_some(), "an OPT record is kept");
        assert!(reply.answers.is_empty());
    }
    assert_eq!(
        metric(&server, "meridian_dns_malformed_queries_total").await,
        2.0
    );
}
