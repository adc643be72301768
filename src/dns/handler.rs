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

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::LowerQuery;
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::directory::label_to_id;
use crate::metrics::{Metrics, QueryType, Rcode};
use crate::state::{reason_label, source_label};

use super::{Shared, Snapshot};

use super::answer::{Question, Reply};
use super::edns::{ClientAddr, opt_wire_len, response_opt};
use super::explain::{EXPLAIN_LABEL, explain_client, txt_records};
use super::rrset::RecordSet;

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
        let catalog = &snapshot.loaded.zones;
        let request_edns = request.edns.as_ref();
        let mut metadata = Metadata::response_from_request(&request.metadata);

        let client = ClientAddr::from_query(request_edns, request.src().ip());
        // `_explain.` and user directory answers are built for this query alone; they live here.
        let built: RecordSet;
        let reply = match explain_target(request, &snapshot, client.as_ref().ok())
            .or_else(|| self.directory_answer(request, &snapshot))
        {
            Some(Built::Records(records)) => {
                built = RecordSet::new(records);
                Reply::answer(&built)
            }
            Some(Built::Negative(rcode)) => {
                let name = request.queries.queries()[0].name();
                Reply::negative(rcode, snapshot.loaded.zones.negative_soa(name))
            }
            Some(Built::Error(rcode)) => Reply::error(rcode),
            None => decide(request, &snapshot, client.as_ref().ok()),
        };
        // A wildcard match: its records, owned by the question's name (RFC 4592 §3.3.1).
        let synthesized: RecordSet;
        let reply = match (reply.wildcard, request.queries.queries().first()) {
            (Some(source), Some(query)) => {
                let owner = query.original().name();
                synthesized = RecordSet::new(
                    source
                        .records()
                        .iter()
                        .map(|record| {
                            let mut record = record.clone();
                            record.name = owner.clone();
                            record
                        })
                        .collect::<Vec<_>>(),
                );
                reply.with_answer(&synthesized)
            }
            _ => reply,
        };
        if let Some(routed) = reply.routed {
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
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(0, |q| u16::from(q.query_type()));
        let sent = response_handle.send_response(response).await;
        self.metrics.record_query(
            QueryType::from_code(qtype),
            Rcode::from_code(u16::from(metadata.response_code)),
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

/// An answer built for one query (explanations, the user directory).
enum Built {
    /// NOERROR with these records.
    Records(Vec<Record>),
    /// NXDOMAIN or NODATA (NOERROR) with the zone's SOA.
    Negative(ResponseCode),
    /// A bare error (REFUSED, FORMERR).
    Error(ResponseCode),
}

impl Handler {
    /// For `<label>.<directory.zone_name>`: the user's facts (TXT) or serving datacenter's
    /// frontend addresses (A/AAAA); REFUSED outside `directory.allow`. `None` for other names.
    fn directory_answer(&self, request: &Request, snapshot: &Snapshot) -> Option<Built> {
        let query = single_question(request)?;
        let label = snapshot.loaded.zones.directory_label(query.name())?;
        let (Some(view), Some(settings)) = (&snapshot.directory, &snapshot.loaded.config.directory)
        else {
            return None;
        };
        if !settings.allowed(request.src().ip()) {
            return Some(Built::Error(ResponseCode::Refused));
        }
        let Some(user) = std::str::from_utf8(label).ok().and_then(label_to_id) else {
            return Some(Built::Negative(ResponseCode::NXDomain));
        };
        let facts = view.facts(&user);
        let (source, reason) = facts.metric_labels();
        self.metrics.record_lookup(source, reason);
        let owner = query.original().name();
        let frontends = facts
            .serve_from_index
            .and_then(|i| settings.frontends.iter().find(|f| f.datacenter == i));
        let rdata: Vec<RData> = match query.query_type() {
            RecordType::TXT | RecordType::ANY => vec![RData::TXT(TXT::new(vec![format!(
                "user={user} bucket={} home={} replica={} serve_from={} reason={} source={}",
                facts.bucket,
                facts.home,
                facts.replica,
                facts.serve_from,
                reason_label(facts.reason),
                source_label(facts.source)
            )]))],
            RecordType::A => frontends.map_or_else(Vec::new, |f| {
                f.a.iter().map(|ip| RData::A(A(*ip))).collect()
            }),
            RecordType::AAAA => frontends.map_or_else(Vec::new, |f| {
                f.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect()
            }),
            _ => Vec::new(),
        };
        if rdata.is_empty() {
            return Some(Built::Negative(ResponseCode::NoError));
        }
        Some(Built::Records(
            rdata
                .into_iter()
                .map(|rdata| Record::from_rdata(owner.clone(), settings.ttl, rdata))
                .collect(),
        ))
    }
}

/// The question of a plain single-question class-IN query.
fn single_question(request: &Request) -> Option<&LowerQuery> {
    let query = request.queries.queries().first()?;
    (request.queries.len() == 1
        && request.metadata.op_code == OpCode::Query
        && query.query_class() == DNSClass::IN
        && request.edns.as_ref().is_none_or(|e| e.version() == 0))
    .then_some(query)
}

/// For a `_explain.<name>` TXT query: the explanation's records, or REFUSED for a client
/// outside `control.explain_allow`. `None` for every other query.
fn explain_target(
    request: &Request,
    snapshot: &Snapshot,
    client: Option<&ClientAddr>,
) -> Option<Built> {
    let query = single_question(request)?;
    if query.query_type() != RecordType::TXT {
        return None;
    }
    let name = query.name();
    if name.iter().next()? != EXPLAIN_LABEL {
        return None;
    }
    let control = &snapshot.loaded.config.control;
    if !control.explain_allowed(request.src().ip()) {
        return Some(Built::Error(ResponseCode::Refused));
    }
    let Some(client) = client else {
        return Some(Built::Error(ResponseCode::FormErr));
    };
    let explanation = explain_client(snapshot, &name.base_name(), RecordType::A, client);
    Some(Built::Records(txt_records(
        query.original().name(),
        &explanation,
    )))
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
    snapshot.loaded.zones.respond(
        &snapshot.prepared,
        &snapshot.routing,
        &snapshot.loaded.geo,
        question,
        client,
    )
}
