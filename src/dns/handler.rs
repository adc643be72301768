//! Our hickory `RequestHandler`: one query in, one response out.
//!
//! Header checks (opcode, question count, EDNS version, ECS shape) happen here; everything about
//! names and records is in `answer.rs`. The only `.await` is the send, and nothing here locks or
//! logs above `debug`.

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use crate::state::{Shared, Snapshot};

use super::answer::{Question, Reply};
use super::edns::{ClientAddr, response_opt};

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
        let catalog = &snapshot.catalog;
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
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let response = builder.build(
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
    snapshot
        .catalog
        .respond(&snapshot.routing, &snapshot.geo, question, client)
}
