//! Our hickory `RequestHandler`: a thin adapter around [`respond`], the one answer path.
//!
//! It loads the snapshot once, hands the request to `respond`, counts what the response says
//! (routed answers, failed-open decisions, directory lookups, the query itself) and sends it.
//! The only `.await` is the send, and nothing here locks or logs above `debug`.

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tracing::debug;

use crate::metrics::{Metrics, QueryType, Rcode};

use super::respond::{Response, Transport, respond};
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
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(0, |q| u16::from(q.query_type()));
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
