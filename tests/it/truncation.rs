//! UDP size limits and the TC bit: 512 bytes without EDNS (RFC 1035 §4.2.1), the requester's
//! EDNS payload size capped at the server's 1232 (`server.max_udp_payload`), and TCP for the
//! full answer (RFC 7766).
//!
//! Sizes are chosen so that every assertion tells something: a TXT record of 60 bytes takes
//! 73 bytes on the wire (compressed owner 2, type/class/TTL/length 10, one length byte and 60),
//! after the 12-byte header and the question (the name plus 4); the first record spells its
//! owner out (the name's length instead of 2). So:
//! - `medium` (12 records, 12 + 24 + 12 × 73 + 18 = 930 bytes) is over 512 but under 1232;
//! - `big` (30 records, 12 + 21 + 30 × 73 + 15 = 2238 bytes) is over 1232 too.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::client::{self, Ask, txt_strings};
use crate::support::{CONFIG, TestServer, ZONE};

const MEDIUM: usize = 12;
const BIG: usize = 30;
const TXT_LEN: usize = 60;
/// The server's default `max_udp_payload`.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// One TXT string per record, each distinct (identical records would collapse into one), of
/// exactly `len` bytes.
fn txt_lines(owner: &str, n: usize, len: usize) -> String {
    (0..n)
        .map(|i| format!("{owner} IN TXT \"{i:02}{}\"\n", "x".repeat(len - 2)))
        .collect()
}

fn zone() -> String {
    let mut zone = ZONE.to_owned();
    zone.push_str(&txt_lines("medium", MEDIUM, TXT_LEN));
    zone.push_str(&txt_lines("big", BIG, TXT_LEN));
    zone
}

async fn server() -> TestServer {
    TestServer::start(CONFIG, &zone()).await
}

/// Sends `ask` over UDP and returns the decoded reply and its size on the wire.
async fn udp(server: &TestServer, ask: &Ask) -> (Message, usize) {
    let bytes = client::send_udp(server.udp, &ask.to_bytes()).await;
    let reply = client::decode(&bytes);
    assert_eq!(reply.metadata.id, ask.id());
    (reply, bytes.len())
}

#[track_caller]
fn assert_complete(reply: &Message, n: usize, what: &str) {
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{what}"
    );
    assert!(!reply.metadata.truncation, "{what}: TC set");
    assert_eq!(reply.answers.len(), n, "{what}: every record");
    for record in &reply.answers {
        assert_eq!(txt_strings(record)[0].len(), TXT_LEN, "{what}");
    }
}

#[tokio::test]
async fn udp_without_edns_is_truncated_at_512_bytes() {
    let server = server().await;
    for (name, n) in [("medium.example.com", MEDIUM), ("big.example.com", BIG)] {
        let ask = Ask::new(name, RecordType::TXT);
        let (reply, size) = udp(&server, &ask).await;
        assert!(reply.metadata.truncation, "{name}: TC over 512 bytes");
        assert!(size <= 512, "{name}: {size} bytes without EDNS");
        assert!(
            reply.answers.is_empty(),
            "{name}: no partial RRset ({n} records)"
        );
        assert!(
            reply.edns.is_none(),
            "{name}: no OPT without one in the query"
        );

        // The resolver retries over TCP and gets everything.
        let reply = ask.tcp(server.tcp).await;
        assert_complete(&reply, n, name);
    }
}

#[tokio::test]
async fn edns_payload_is_capped_at_the_server_maximum() {
    let server = server().await;

    // 930 bytes fit in 4096, and in our 1232: the whole answer over UDP.
    let (reply, size) = udp(
        &server,
        &Ask::new("medium.example.com", RecordType::TXT).edns(4096),
    )
    .await;
    assert_complete(&reply, MEDIUM, "medium with EDNS 4096");
    assert!(
        size > 512,
        "{size} bytes: the point is that this is more than 512"
    );
    let edns = reply.edns.as_ref().expect("OPT answered with OPT");
    assert_eq!(
        edns.max_payload(),
        MAX_UDP_PAYLOAD,
        "we advertise our own limit"
    );

    // 2238 bytes would fit in the requester's 4096 but not in our 1232: TC, with no partial
    // answer (RFC 2181 §9), and the OPT kept (RFC 6891 §7).
    let ask = Ask::new("big.example.com", RecordType::TXT).edns(4096);
    let (reply, size) = udp(&server, &ask).await;
    assert!(reply.metadata.truncation, "TC past our 1232 bytes");
    assert!(
        size <= usize::from(MAX_UDP_PAYLOAD),
        "{size} bytes over UDP"
    );
    assert!(reply.answers.is_empty(), "no partial RRset");
    assert_eq!(
        reply.edns.as_ref().map(|e| e.max_payload()),
        Some(MAX_UDP_PAYLOAD)
    );

    let reply = ask.tcp(server.tcp).await;
    assert_complete(&reply, BIG, "big over TCP");
}

#[tokio::test]
async fn small_edns_payloads_count_as_512() {
    let server = server().await;
    // RFC 6891 §6.2.5: values below 512 are treated as 512.
    let ask = Ask::new("medium.example.com", RecordType::TXT).edns(100);
    let (reply, size) = udp(&server, &ask).await;
    assert!(reply.metadata.truncation, "930 bytes do not fit in 512");
    assert!(size <= 512, "{size} bytes");
    assert!(reply.answers.is_empty(), "no partial RRset");
    let edns = reply.edns.as_ref().expect("OPT answered with OPT");
    assert_eq!(edns.max_payload(), 512);

    // A payload between 512 and our limit is used as it is: the 930-byte answer fits in 1000
    // (so the requester's size, not 512, was the limit) but the 2238-byte one does not.
    let ask = Ask::new("medium.example.com", RecordType::TXT).edns(1000);
    let (reply, size) = udp(&server, &ask).await;
    assert_complete(&reply, MEDIUM, "medium with EDNS 1000");
    assert!(
        size > 512 && size <= 1000,
        "{size} bytes for a 1000-byte payload"
    );
    let ask = Ask::new("big.example.com", RecordType::TXT).edns(1100);
    let (reply, size) = udp(&server, &ask).await;
    assert!(reply.metadata.truncation);
    assert!(size <= 1100, "{size} bytes for a 1100-byte payload");
    assert_eq!(reply.edns.as_ref().map(|e| e.max_payload()), Some(1100));
}

/// Requester payload sizes from 512 to our 1232 in steps of 5: since 5 and the record size 73
/// share no factor, the room left after the last whole record takes every value from 0 to 72.
fn payload_sizes() -> impl Iterator<Item = u16> {
    (512..=MAX_UDP_PAYLOAD).step_by(5)
}

/// The same query with the three OPT records we answer: bare (11 bytes), with NSID and with
/// ECS (longer).
fn edns_variants(payload: u16) -> [Ask; 3] {
    let ask = || Ask::new("big.example.com", RecordType::TXT).edns(payload);
    [ask(), ask().nsid(), ask().ecs("81.2.69.0/24")]
}

#[tokio::test]
async fn truncated_edns_replies_keep_their_opt() {
    let server = server().await;
    // RFC 6891 §7: a truncated reply to an EDNS query still carries the OPT record ("the
    // minimal response MUST be the DNS header, question section, and an OPT record").
    let mut missing = Vec::new();
    for payload in payload_sizes() {
        for ask in edns_variants(payload) {
            let (reply, size) = udp(&server, &ask).await;
            assert!(reply.metadata.truncation, "payload {payload}: TC");
            assert!(
                size <= usize::from(payload),
                "payload {payload}: {size} bytes"
            );
            if reply.edns.is_none() {
                missing.push(format!(
                    "payload {payload}, {} records, {size} bytes",
                    reply.answers.len()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} truncated replies to EDNS queries have no OPT record, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn truncated_replies_end_with_their_last_record() {
    let server = server().await;
    // Every byte of a datagram belongs to the message: no leftovers of a record that did not
    // fit (strict parsers reject trailing data as a malformed packet).
    let mut trailing = Vec::new();
    for payload in payload_sizes() {
        for ask in edns_variants(payload) {
            let bytes = client::send_udp(server.udp, &ask.to_bytes()).await;
            let n = client::trailing_bytes(&bytes);
            if n > 0 {
                trailing.push(format!("payload {payload}: {n} of {} bytes", bytes.len()));
            }
        }
    }
    let ask = Ask::new("big.example.com", RecordType::TXT);
    let bytes = client::send_udp(server.udp, &ask.to_bytes()).await;
    let n = client::trailing_bytes(&bytes);
    if n > 0 {
        trailing.push(format!("no EDNS: {n} of {} bytes", bytes.len()));
    }
    assert!(
        trailing.is_empty(),
        "{} truncated replies carry trailing bytes after the message, e.g. {:?}",
        trailing.len(),
        &trailing[..trailing.len().min(5)]
    );
}

/// Names whose whole answers fall on both sides of 512 bytes, one byte apart: `w<n>` holds one
/// TXT record of two strings, `n` bytes of text in all, and `mx18` the 18 MX records.
fn boundary_zone() -> String {
    let mut zone = ZONE.to_owned();
    for n in 440..=480 {
        zone.push_str(&format!(
            "w{n} IN TXT \"{}\" \"{}\"\n",
            "a".repeat(250),
            "b".repeat(n - 250)
        ));
    }
    for i in 0..18 {
        zone.push_str(&format!("mx18 IN MX {i} mail{i:02}.example.com.\n"));
    }
    zone
}

#[tokio::test]
async fn truncation_only_when_the_message_does_not_fit() {
    let server = TestServer::start(CONFIG, &boundary_zone()).await;
    let names: Vec<(String, RecordType)> = (440..=480)
        .map(|n| (format!("w{n}.example.com"), RecordType::TXT))
        .chain([("mx18.example.com".to_owned(), RecordType::MX)])
        .collect();
    let mut wrong = Vec::new();
    let (mut at_512, mut mx18) = (false, 0);
    for (name, qtype) in &names {
        // Over TCP the whole answer: its size is what must fit.
        let plain = Ask::new(name, *qtype);
        let whole = client::send_tcp(server.tcp, &plain.to_bytes()).await.len();
        at_512 |= whole == 512;
        if name.starts_with("mx18") {
            mx18 = whole;
        }
        let (reply, size) = udp(&server, &plain).await;
        if reply.metadata.truncation != (whole > 512) {
            wrong.push(format!(
                "{name}, no EDNS: {whole} bytes whole, {size} sent, TC {}",
                reply.metadata.truncation
            ));
        }
        for variant in [Ask::new(name, *qtype), Ask::new(name, *qtype).nsid()] {
            let whole = client::send_tcp(server.tcp, &variant.clone().edns(4096).to_bytes())
                .await
                .len();
            for payload in [whole - 1, whole, whole + 1] {
                let payload = u16::try_from(payload.max(512)).unwrap();
                let ask = variant.clone().edns(payload);
                let (reply, size) = udp(&server, &ask).await;
                if reply.metadata.truncation != (whole > usize::from(payload)) {
                    wrong.push(format!(
                        "{name}, EDNS {payload}: {whole} bytes whole, {size} sent, TC {}",
                        reply.metadata.truncation
                    ));
                }
            }
        }
    }
    assert!(at_512, "one answer is exactly 512 bytes whole");
    assert!(mx18 > 450 && mx18 <= 512, "18 MX records: {mx18} bytes");
    assert!(
        wrong.is_empty(),
        "TC where the answer fits, or none where it does not:\n{}",
        wrong.join("\n")
    );
}
