//! What each fuzz target checks, shared with the regression tests in `tests/it/fuzz.rs` (which
//! include this file), so that a kept crash input is checked exactly as the fuzzer checked it.
//!
//! Every function panics when an input breaks a property; libFuzzer records the input.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Header, Message, MessageType, Query};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use meridian::config::{Config, Source};
use meridian::dns::{Handler, Transport};
use meridian::metrics::Metrics;
use meridian::state::{Shared, Snapshot};

/// The shipped example, loaded once: what the request, import and restore targets answer from.
pub(crate) fn example() -> &'static (Handler, Shared<meridian::dns::Answers>) {
    static EXAMPLE: OnceLock<(Handler, Shared<meridian::dns::Answers>)> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let snapshot = Snapshot::load(&Source::Example, 1).expect("the example loads");
        let (shared, publisher) = Shared::new(snapshot);
        // The publisher is never used again: the snapshot stays the example's.
        std::mem::forget(publisher);
        (
            Handler::new(shared.clone(), Arc::new(Metrics::new())),
            shared,
        )
    })
}

/// The request handler: bytes in, bytes out, over UDP and over TCP. A reply (or none, for
/// what is not a query) never panics; a reply has the query's ID and opcode, QR set, decodes,
/// echoes a single parseable question exactly (case included), and fits the limit the query
/// advertised (512 bytes without EDNS, over UDP).
pub(crate) fn request(bytes: &[u8]) {
    let (handler, _) = example();
    let src: SocketAddr = "192.0.2.1:5353".parse().expect("an address");
    let mut reply = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let answered = handler.answer(bytes, src, transport, &mut reply);
        check_reply(bytes, answered.then_some(&reply[..]), transport);
    }
}

/// The UDP fast path: whenever it answers `bytes`, its reply is the general path's, byte for
/// byte (issue 9), from an IPv4 and an IPv6 resolver.
pub(crate) fn fast_path(bytes: &[u8]) {
    let (_, shared) = example();
    let snapshot = shared.load();
    for src in ["192.0.2.1:5353", "[2001:db8::53]:53"] {
        let src: SocketAddr = src.parse().expect("an address");
        let (fast, general) = meridian::dns::both_paths(&snapshot, bytes, src);
        if let Some(fast) = fast {
            assert_eq!(
                Some(&fast),
                general.as_ref(),
                "the fast path's reply to {bytes:02x?} is not the general path's"
            );
        }
    }
}

/// The properties of `reply` to the query `query`.
pub(crate) fn check_reply(query: &[u8], reply: Option<&[u8]>, transport: Transport) {
    let header = Header::read(&mut BinDecoder::new(query)).ok();
    let Some(header) = header.filter(|h| h.metadata.message_type == MessageType::Query) else {
        assert!(reply.is_none(), "a reply to a message that is not a query");
        return;
    };
    let reply = reply.expect("a query gets a reply");
    let answer = Message::from_vec(reply)
        .unwrap_or_else(|e| panic!("the reply does not decode: {e}: {reply:02x?}"));
    assert_eq!(answer.metadata.id, header.metadata.id, "the reply's ID");
    assert_eq!(answer.metadata.message_type, MessageType::Response, "QR");
    assert_eq!(answer.metadata.op_code, header.metadata.op_code, "opcode");
    if header.counts.queries == 1 {
        let mut decoder = BinDecoder::new(&query[12..]);
        if let Ok(question) = Query::read(&mut decoder) {
            assert_eq!(answer.queries.len(), 1, "the question is echoed");
            let echoed = &answer.queries[0];
            assert_eq!(echoed.name().to_ascii(), question.name().to_ascii());
            assert_eq!(echoed.query_type(), question.query_type());
            assert_eq!(echoed.query_class(), question.query_class());
        }
    }
    if transport == Transport::Udp {
        let advertised = Message::from_vec(query)
            .ok()
            .and_then(|q| q.edns.map(|edns| edns.max_payload()))
            .unwrap_or(512)
            .max(512);
        assert!(
            reply.len() <= usize::from(advertised),
            "a {} byte UDP reply to a query advertising {advertised}",
            reply.len()
        );
    }
}

/// The zone file reader: any bytes give records or problems, never a panic.
pub(crate) fn zone(bytes: &[u8]) {
    if let Err(problems) = meridian::dns::parse_zone("example.com", bytes) {
        assert!(!problems.is_empty(), "an error names its problems");
    }
}

/// The configuration reader: any text gives a configuration or problems, never a panic.
pub(crate) fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Err(error) = Config::from_yaml_str(text) {
        assert!(!error.problems.is_empty(), "an error names its problems");
    }
}

/// The datacenter report decoder.
pub(crate) fn report(bytes: &[u8]) {
    if let Err(message) = meridian::control::fuzzing::decode_report(bytes) {
        assert!(!message.is_empty(), "an error says what is wrong");
    }
}

/// The directory import (NDJSON and CSV) and restore decoders, with a small body limit so
/// that the limit is reached too.
pub(crate) fn import(bytes: &[u8]) {
    use meridian::control::fuzzing::{decode_import, decode_restore};
    let (_, shared) = example();
    let snapshot = shared.load();
    let limit = 4096;
    for csv in [false, true] {
        if let Err(message) = decode_import(&snapshot, bytes, csv, limit) {
            assert!(!message.is_empty(), "an error says what is wrong");
        }
    }
    if let Err(message) = decode_restore(&snapshot, bytes, limit) {
        assert!(!message.is_empty(), "an error says what is wrong");
    }
}
