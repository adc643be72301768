//! Our hickory `RequestHandler`: a thin adapter around [`respond`], the one answer path.
//!
//! It loads the snapshot once, hands the request to `respond`, counts what the response says
//! (routed answers, failed-open decisions, directory lookups, the query itself) and sends it.
//! The only `.await` is the send, and nothing here locks or logs above `debug`.

use std::sync::Arc;
use std::time::Instant;

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tracing::debug;

use crate::metrics::{Metrics, QueryType, Rcode};

use super::respond::{Response, Transport, respond};
use super::tcp::form_error;
use super::{Shared, Snapshot};

/// Answers DNS queries from the current snapshot.
#[derive(Clone)]
pub struct Handler {
    state: Shared,
    /// Shared, not locked: every handle the query path touches is an atomic.
    metrics: Arc<Metrics>,
}

impl Handler {
    /// A handler reading snapshots from `state` and counting into `metrics`.
    pub fn new(state: Shared, metrics: Arc<Metrics>) -> Self {
        Handler { state, metrics }
    }

    /// Answers one DNS/UDP datagram `message` from `src` into `reply` through the general path,
    /// counting it as the hickory path does; `false` when nothing is to be sent (a message too
    /// short for a header, or a response, which we never answer: no reflection).
    pub(super) fn answer_datagram(
        &self,
        message: &[u8],
        src: SocketAddr,
        reply: &mut Vec<u8>,
    ) -> bool {
        let started = Instant::now();
        let request = match Request::from_bytes(message.to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(error) => {
                debug!(%src, %error, "undecodable DNS/UDP message");
                // RFC 1035 §4.1.1: a message whose header reads gets FORMERR.
                return match form_error(message) {
                    Some(bytes) => {
                        reply.extend_from_slice(&bytes);
                        true
                    }
                    None => false,
                };
            }
        };
        if request.metadata.message_type == MessageType::Response {
            return false;
        }
        let snapshot = self.state.load();
        let response = respond(&snapshot, &request, src.ip(), Transport::Udp);
        self.count(&snapshot, &response);
        let qtype = first_qtype(&request);
        let mut rcode = u16::from(response.metadata.response_code);
        // As hickory does for UDP: at most the payload size of the reply's OPT, else 512.
        let limit = response.edns.as_ref().map_or(512, Edns::max_payload);
        let mut encoder = BinEncoder::new(reply);
        encoder.set_max_size(limit);
        if let Err(error) = response.message(&request).destructive_emit(&mut encoder) {
            debug!(%error, %src, "failed to encode response");
            reply.clear();
            let mut metadata =
                Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            rcode = u16::from(ResponseCode::ServFail);
            let header = Header {
                metadata,
                counts: HeaderCounts::default(),
            };
            let Ok(bytes) = header.to_bytes() else {
                return false;
            };
            reply.extend_from_slice(&bytes);
        }
        self.metrics.record_query(
            QueryType::from_code(qtype),
            Rcode::from_code(rcode),
            started.elapsed().as_secs_f64(),
        );
        true
    }

    /// Counts what `response` did, besides the query itself.
    fn count(&self, snapshot: &Snapshot, response: &Response<'_>) {
        if let Some(routed) = response.reply.routed {
            let counters = &snapshot.loaded.counters;
            if let Some(first) = routed.first {
                counters
                    .answers
                    .inc(usize::from(routed.service.0), usize::from(first.0));
            }
            if routed.failed_open {
                counters.failed_open.inc(usize::from(routed.service.0));
            }
        }
        if let Some((source, reason)) = response.lookup {
            self.metrics.record_lookup(source, reason);
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        // One snapshot for the whole query: every record sent comes from this consistent view.
        let snapshot = self.state.load();
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let response = respond(&snapshot, request, request.src().ip(), transport);
        self.count(&snapshot, &response);
        let qtype = first_qtype(request);
        let rcode = u16::from(response.metadata.response_code);
        let sent = response_handle
            .send_response(response.message(request))
            .await;
        self.metrics.record_query(
            QueryType::from_code(qtype),
            Rcode::from_code(rcode),
            started.elapsed().as_secs_f64(),
        );
        match sent {
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

/// The type code of the request's first question, 0 without one (for the query counter).
fn first_qtype(request: &Request) -> u16 {
    request
        .queries
        .queries()
        .first()
        .map_or(0, |q| u16::from(q.query_type()))
}
