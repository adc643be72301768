//! Bytes in, bytes out: one DNS message as received to the reply as sent, around [`respond`].
//!
//! Our UDP and TCP loops and the fuzz harness all go through [`answer_bytes`], so what the
//! fuzzer checks is what the sockets send. It decodes the message, answers it from the
//! snapshot, and encodes the reply; a message that does not decode (or whose ECS address is
//! longer than its prefix needs, which hickory-proto does not see) gets FORMERR with its
//! question (when the question itself decodes) and an OPT record (when the query had
//! additional records), as Knot answers it, rather than a bare header.
//!
//! It performs no I/O, counts nothing and logs nothing: the caller does, once per outcome.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Header, MessageType, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::Snapshot;
use super::edns::ecs_address_overlong;
use super::respond::{Response, Transport, respond};
use super::rrl::ResponseClass;

/// Header length (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;

/// What came of one received message.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this reply.
    Reply(Reply),
    /// Send nothing: shorter than a header, or itself a response (never answer a response, or
    /// two servers could bounce a packet between them forever).
    Ignore,
}

/// An encoded reply and what the caller counts and rate-limits by.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The reply's wire form.
    pub(crate) bytes: Vec<u8>,
    /// The question's type (0 when there is none).
    pub(crate) qtype: u16,
    /// The reply's rcode.
    pub(crate) rcode: u16,
    /// Its class for response rate limiting.
    pub(crate) class: ResponseClass,
    /// The query could not be decoded.
    pub(crate) malformed: bool,
}

/// Answers the message `bytes`, received from `src` over `transport`, from `snapshot`.
///
/// `count` sees the [`Response`] of every query that decoded, before it is encoded, so that the
/// caller can count routed answers and directory lookups.
pub(crate) fn answer_bytes(
    snapshot: &Snapshot,
    bytes: &[u8],
    src: SocketAddr,
    transport: Transport,
    count: impl FnOnce(&Snapshot, &Response<'_>),
) -> Outcome {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return Outcome::Ignore;
    };
    if header.metadata.message_type == MessageType::Response {
        return Outcome::Ignore;
    }
    let protocol = match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let Ok(request) = Request::from_bytes(bytes.to_vec(), src, protocol) else {
        return Outcome::Reply(form_error(snapshot, bytes, header));
    };
    if ecs_address_overlong(bytes) {
        return Outcome::Reply(form_error(snapshot, bytes, header));
    }
    let response = respond(snapshot, &request, src.ip(), transport);
    count(snapshot, &response);
    let qtype = request
        .queries
        .queries()
        .first()
        .map_or(0, |q| u16::from(q.query_type()));
    let class = response_class(&response);
    let rcode = u16::from(response.metadata.response_code);
    let mut out = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut out);
    if response
        .message(&request)
        .destructive_emit(&mut encoder)
        .is_err()
    {
        // An answer we cannot encode (a record too large for a message): SERVFAIL, header and
        // question only.
        return Outcome::Reply(bare_reply(snapshot, bytes, header, ResponseCode::ServFail));
    }
    Outcome::Reply(Reply {
        bytes: out,
        qtype,
        rcode,
        class,
        malformed: false,
    })
}

/// SERVFAIL for the message `bytes` (header and question), or `None` when it has no header or
/// is itself a response: what a query gets when answering it failed inside the server.
pub(crate) fn servfail(snapshot: &Snapshot, bytes: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    Some(bare_reply(snapshot, bytes, header, ResponseCode::ServFail).bytes)
}

/// The class of a response, for rate limiting.
fn response_class(response: &Response<'_>) -> ResponseClass {
    match response.metadata.response_code {
        ResponseCode::NoError if response.answers().next().is_some() => ResponseClass::Positive,
        ResponseCode::NoError if !response.metadata.authoritative => ResponseClass::Referral,
        ResponseCode::NoError => ResponseClass::NoData,
        ResponseCode::NXDomain => ResponseClass::NxDomain,
        _ => ResponseClass::Error,
    }
}

/// FORMERR for a message whose header decoded but whose body did not.
fn form_error(snapshot: &Snapshot, bytes: &[u8], header: Header) -> Reply {
    let mut reply = bare_reply(snapshot, bytes, header, ResponseCode::FormErr);
    reply.malformed = true;
    reply
}

/// A reply of `header` with `rcode`, the question when it decodes, and an OPT record when the
/// query had additional records (where its OPT would be; RFC 6891 §7: a responder that
/// understands EDNS answers with an OPT).
fn bare_reply(snapshot: &Snapshot, bytes: &[u8], header: Header, rcode: ResponseCode) -> Reply {
    let mut decoder = BinDecoder::new(bytes.get(HEADER_LEN..).unwrap_or_default());
    // RFC 9619: only a single question is echoed; more than one is itself malformed.
    let queries = (header.counts.queries == 1)
        .then(|| Queries::read(&mut decoder, 1).ok())
        .flatten()
        .unwrap_or_else(|| Queries::read(&mut BinDecoder::new(&[]), 0).expect("no questions"));
    let qtype = queries
        .queries()
        .first()
        .map_or(0, |q| u16::from(q.query_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(snapshot.loaded.zones.max_udp_payload());
    edns.set_version(0);
    let edns = (header.counts.additionals > 0).then_some(&edns);
    // `response_from_request` keeps the id, opcode, RD and CD, and clears the rest.
    let message = MessageResponseBuilder::new(&queries, edns).error_msg(&header.metadata, rcode);
    let mut out = Vec::with_capacity(HEADER_LEN + queries.as_bytes().len() + 11);
    let mut encoder = BinEncoder::new(&mut out);
    if message.destructive_emit(&mut encoder).is_err() {
        out.clear();
    }
    Reply {
        bytes: out,
        qtype,
        rcode: u16::from(rcode),
        class: ResponseClass::Error,
        malformed: false,
    }
}
