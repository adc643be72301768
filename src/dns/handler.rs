//! Our hickory `RequestHandler`: one query in, one response out.
//!
//! Header checks (opcode, question count, EDNS version, ECS shape) happen here; everything about
//! names and records is in `answer.rs`. The only `.await` is the send, and nothing here locks or
//! logs above `debug`.

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use crate::state::{Shared, Snapshot};

use super::answer::{Question, Reply};
use super::edns::{ClientAddr, opt_wire_len, response_opt};

/// Answers DNS queries from the current snapshot.
#[derive(Clone)]
pub struct Handler {
    state: Shared,
}

impl Handler {
    /// A handler reading snapshots from `state`.
    pub fn new(state: Shared) -> Self {
        Handler { state }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // One snapshot for the whole query: every record sent comes from this consistent view.
        let snapshot = self.state.load();
        let catalog = &snapshot.loaded.catalog;
        let request_edns = request.edns.as_ref();
        let mut metadata = Metadata::response_from_request(&request.metadata);

        let client = ClientAddr::from_query(request_edns, request.src().ip());
        let reply = decide(request, &snapshot, client.as_ref().ok());
        metadata.authoritative = reply.authoritative;
        metadata.response_code = reply.rcode;

        let response_edns: Option<Edns> = request_edns.map(|edns| {
            let ecs = client.as_ref().ok().and_then(|client| {
                client.ecs.map(|mut ecs| {
                    ecs.set_scope_prefix(client.reply_scope(reply.scope));
                    ecs
                })
            });
            response_opt(
                edns,
                catalog.max_udp_payload(),
                ecs,
                Some(catalog.identity()),
            )
        });
        let builder = || {
            let mut builder = MessageResponseBuilder::new(&request.queries, None);
            if let Some(edns) = &response_edns {
                builder.edns(edns);
            }
            builder
        };
        let reply = if request.protocol() == Protocol::Udp
            && !fits(request, &reply, response_edns.as_ref(), &builder)
        {
            metadata.truncation = true;
            reply.without_records()
        } else {
            reply
        };
        let response = builder().build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, src = %request.src(), "failed to send response");
                let mut metadata = Metadata::new(
                    request.metadata.id,
                    MessageType::Response,
                    request.metadata.op_code,
                );
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Header length (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;

/// Whether every record of `reply` fits the UDP payload size, OPT record included.
///
/// Most replies are far below the limit and are judged by the records' precomputed wire
/// lengths alone; only the rest are encoded once to find out. A reply that does not fit is sent
/// as header, question and OPT with TC set: hickory would otherwise send as many records as fit
/// and drop the OPT (RFC 6891 §7 wants it kept) and a partial RRset (RFC 2181 §9).
fn fits<'q>(
    request: &Request,
    reply: &Reply<'_>,
    edns: Option<&Edns>,
    builder: &impl Fn() -> MessageResponseBuilder<'q>,
) -> bool {
    let limit = usize::from(edns.map_or(512, Edns::max_payload));
    let bound = HEADER_LEN
        + request.queries.as_bytes().len()
        + reply.records_wire_len()
        + edns.map_or(0, opt_wire_len);
    if bound <= limit {
        return true;
    }
    let response = builder().build(
        Metadata::response_from_request(&request.metadata),
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    let mut bytes = Vec::with_capacity(limit);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    match response.destructive_emit(&mut encoder) {
        Ok(info) => !info.truncation,
        Err(_) => false,
    }
}

/// The reply to a request: header-level errors first, then the catalog's answer.
///
/// `client` is `None` when the ECS option was malformed.
fn decide<'a>(request: &Request, snapshot: &'a Snapshot, client: Option<&ClientAddr>) -> Reply<'a> {
    if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        // RFC 6891 §6.1.3: we speak EDNS version 0 only.
        return Reply::error(ResponseCode::BADVERS);
    }
    if request.metadata.op_code != OpCode::Query {
        return Reply::error(ResponseCode::NotImp);
    }
    if request.queries.len() != 1 {
        // RFC 9619: a query carries exactly one question.
        return Reply::error(ResponseCode::FormErr);
    }
    let Some(client) = client else {
        // RFC 7871 §7.2.1: a malformed ECS option gets FORMERR.
        return Reply::error(ResponseCode::FormErr);
    };
    let query = &request.queries.queries()[0];
    let question = Question {
        name: query.name(),
        qtype: query.query_type(),
        qclass: query.query_class(),
    };
    snapshot.loaded.catalog.respond(
        &snapshot.answers,
        &snapshot.routing,
        &snapshot.loaded.geo,
        question,
        client,
    )
}
