//! The general answer path: one function, [`respond`], from (snapshot, request, client address,
//! transport) to a response. Every answer meridian gives comes from it: the socket loops
//! reach it through `Handler::answer` and `wire.rs`, and explanations (`GET /v1/explain` and
//! `_explain.` TXT) run a query through it, so an explanation shows what DNS answers.
//!
//! In order: the client's address (EDNS Client Subnet, else the source address), `_explain.`
//! and user directory names, header checks, the catalog's answer (zones, CNAMEs, referrals,
//! routed services), wildcard and DNAME synthesis, the reply's OPT record, and truncation for UDP.
//! It performs no I/O and counts nothing: the caller sends the response and records metrics
//! from it.

use std::net::IpAddr;

use hickory_proto::op::{Edns, LowerQuery, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::zone_handler::{MessageRequest, MessageResponse, MessageResponseBuilder};
use tracing::debug;

use crate::directory::label_to_id;
use crate::metrics::{LookupReason, LookupSource};
use crate::routing::Toggle;
use crate::state::{reason_label, source_label};

use super::Snapshot;
use super::answer::{Question, REVISION_NAME, Reply, RoutedInfo};
use super::edns::{ClientAddr, opt_wire_len, response_opt, write_nsid};
use super::explain::{EXPLAIN_LABEL, explain_client, txt_records};

/// Header length (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;
/// The UDP payload limit of a query without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_PAYLOAD: u16 = 512;

/// The transport a query came over: UDP replies must fit the payload size, TCP's need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: a reply that does not fit is sent empty with TC set.
    Udp,
    /// A stream: every reply is sent whole.
    Tcp,
}

/// A response ready to encode: header bits, records (borrowed from the snapshot, plus any built
/// for this query alone), the OPT record, and what the caller counts.
#[derive(Debug)]
pub struct Response<'a> {
    /// Header bits: id, opcode and flags copied from the request; AA, RCODE, TC set here.
    pub(crate) metadata: Metadata,
    /// The records and what they were for.
    pub(crate) reply: Reply<'a>,
    /// The reply's OPT record, when the request had one.
    pub(crate) edns: Option<Edns>,
    /// The client as located (ECS address, else the source), `None` for a malformed ECS option.
    pub(crate) client: Option<ClientAddr>,
    /// A user directory lookup, for the caller to count.
    pub(crate) lookup: Option<(LookupSource, LookupReason)>,
}

/// Answers `request`, received from `src` over `transport`, from `snapshot`.
pub fn respond<'a>(
    snapshot: &'a Snapshot,
    request: &MessageRequest,
    src: IpAddr,
    transport: Transport,
) -> Response<'a> {
    let catalog = &snapshot.loaded.zones;
    let client = ClientAddr::from_query(request.edns.as_ref(), src).ok();
    let mut lookup = None;
    // `_explain.`, user directory and CHAOS `revision.meridian.` answers are built for this
    // query alone.
    let reply = match explain_target(request, snapshot, src, client.as_ref())
        .or_else(|| directory_answer(request, snapshot, src, &mut lookup))
        .or_else(|| revision_answer(request, snapshot))
    {
        Some(Built::Records(records)) => {
            let mut reply = Reply::no_error();
            reply.push_built(records);
            reply
        }
        Some(Built::Negative(rcode)) => {
            let name = request.queries.queries()[0].name();
            Reply::negative(rcode, catalog.negative_soa(name))
        }
        Some(Built::Error(rcode)) => Reply::error(rcode),
        None => decide(request, snapshot, client.as_ref(), transport),
    };
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.rcode;
    let edns = request.edns.as_ref().map(|edns| {
        let ecs = client.as_ref().and_then(|client| {
            client.ecs.map(|mut ecs| {
                ecs.set_scope_prefix(client.reply_scope(reply.scope));
                ecs
            })
        });
        let mut nsid = Vec::new();
        write_nsid(catalog.identity(), snapshot.live.revision, &mut nsid);
        response_opt(edns, catalog.max_udp_payload(), ecs, Some(&nsid))
    });
    let mut response = Response {
        metadata,
        reply,
        edns,
        client,
        lookup,
    };
    if transport == Transport::Udp
        && !response.fits(request)
        && !(response.reply.has_optional_additionals() && {
            // Addresses of targets and sibling glue are left out before anything is truncated
            // (RFC 9471 §3: only in-domain glue that does not fit sets TC).
            response.reply = response.reply.without_optional_additionals();
            response.fits(request)
        })
    {
        response.metadata.truncation = true;
        response.reply = response.reply.without_records();
    }
    log_answer(snapshot, request, src, &response);
    response
}

/// The wire form of `reply` to `request`, sent without an OPT record, exactly as `respond`'s caller encodes it: what the fast path prepares.
/// `None` when it cannot be encoded.
pub(crate) fn encode_plain(request: &MessageRequest, reply: Reply<'_>) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.rcode;
    let response = Response {
        metadata,
        reply,
        edns: None,
        client: None,
        lookup: None,
    };
    let mut out = Vec::new();
    response
        .message(request)
        .destructive_emit(&mut BinEncoder::new(&mut out))
        .ok()?;
    Some(out)
}

/// One `debug` line per answer, for operators who turn it on (`RUST_LOG=meridian::dns=debug`
/// or `PUT /v1/log`): who asked, where routing placed them, what they got, and for how wide a
/// network. Off (the default), the level check is all it costs.
fn log_answer(snapshot: &Snapshot, request: &MessageRequest, src: IpAddr, response: &Response) {
    let Some(query) = request.queries.queries().first() else {
        return;
    };
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    AnswerLine {
        src,
        client: response.client.as_ref().map_or(src, |client| client.ip),
        source_prefix: response.client.as_ref().map(|client| client.source_prefix),
        name: query.name(),
        qtype: query.query_type(),
        rcode: response.metadata.response_code,
        scope: response.reply.scope,
        routed: response.reply.routed,
        truncated: response.metadata.truncation,
    }
    .log(snapshot);
}

/// What the `debug` line of one answer says, whichever path answered.
pub(crate) struct AnswerLine<'n, N> {
    pub(crate) src: IpAddr,
    pub(crate) client: IpAddr,
    pub(crate) source_prefix: Option<u8>,
    pub(crate) name: &'n N,
    pub(crate) qtype: RecordType,
    pub(crate) rcode: ResponseCode,
    pub(crate) scope: u8,
    pub(crate) routed: Option<RoutedInfo>,
    pub(crate) truncated: bool,
}

impl<N: std::fmt::Display> AnswerLine<'_, N> {
    /// Logs the line at `debug`, naming the service and datacenter from `snapshot`.
    pub(crate) fn log(&self, snapshot: &Snapshot) {
        let config = &snapshot.loaded.config;
        let routed = self.routed.as_ref();
        debug!(
            src = %self.src,
            client = %self.client,
            source_prefix = self.source_prefix,
            name = %self.name,
            qtype = %self.qtype,
            rcode = %self.rcode,
            scope = self.scope,
            service = routed
                .and_then(|routed| config.services.get(usize::from(routed.service.0)))
                .map(|service| service.name.as_str()),
            datacenter = routed
                .and_then(|routed| routed.first)
                .and_then(|dc| config.datacenters.get(usize::from(dc.0)))
                .map(|dc| dc.name.as_str()),
            failed_open = routed.is_some_and(|routed| routed.failed_open),
            truncated = self.truncated,
            "answered"
        );
    }
}

impl Response<'_> {
    /// The answer section.
    pub(crate) fn answers(&self) -> impl Iterator<Item = &Record> + Send + '_ {
        self.reply.answer_records()
    }

    /// The authority section.
    pub(crate) fn authorities(&self) -> impl Iterator<Item = &Record> + Send + '_ {
        self.reply.authorities.iter()
    }

    /// hickory's message for this response to `request`, borrowing both.
    pub(crate) fn message<'r>(
        &'r self,
        request: &'r MessageRequest,
    ) -> MessageResponse<
        'r,
        'r,
        impl Iterator<Item = &'r Record> + Send + 'r,
        impl Iterator<Item = &'r Record> + Send + 'r,
        impl Iterator<Item = &'r Record> + Send + 'r,
        impl Iterator<Item = &'r Record> + Send + 'r,
    > {
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &self.edns {
            builder.edns(edns);
        }
        builder.build(
            self.metadata,
            self.answers(),
            self.authorities(),
            std::iter::empty(),
            self.reply.additionals.iter(),
        )
    }

    /// Whether every record fits the request's UDP payload size, OPT record included.
    ///
    /// Most replies are far below the limit and are judged by the records' precomputed wire
    /// lengths alone; only the rest are encoded once to find out. A reply that does not fit is
    /// sent as header, question and OPT with TC set: hickory would otherwise send as many
    /// records as fit and drop the OPT (RFC 6891 §7 wants it kept) and a partial RRset (RFC 2181
    /// §9).
    fn fits(&self, request: &MessageRequest) -> bool {
        let limit = usize::from(
            self.edns
                .as_ref()
                .map_or(PLAIN_UDP_PAYLOAD, Edns::max_payload),
        );
        let bound = HEADER_LEN
            + request.queries.as_bytes().len()
            + self.reply.records_wire_len()
            + self.edns.as_ref().map_or(0, opt_wire_len);
        if bound <= limit {
            return true;
        }
        let mut bytes = Vec::with_capacity(limit);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
        match self.message(request).destructive_emit(&mut encoder) {
            Ok(info) => !info.truncation,
            Err(_) => false,
        }
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

/// For CHAOS TXT (or ANY) `revision.meridian.`: the state revision this snapshot serves, in
/// decimal (etcd's revision with the etcd backend, 0 with the embedded store), so that
/// `dig CH TXT revision.meridian. @ns1` shows what `meridian_state_revision` shows. Other types
/// of the name are the catalog's (NOERROR, no records, as for `id.server`). `None` for every
/// other query.
fn revision_answer(request: &MessageRequest, snapshot: &Snapshot) -> Option<Built> {
    let query = request.queries.queries().first()?;
    let asked = request.queries.len() == 1
        && request.metadata.op_code == OpCode::Query
        && query.query_class() == DNSClass::CH
        && matches!(query.query_type(), RecordType::TXT | RecordType::ANY)
        && request.edns.as_ref().is_none_or(|e| e.version() == 0)
        && *query.name() == *REVISION_NAME;
    if !asked {
        return None;
    }
    let mut txt = Record::from_rdata(
        query.original().name().clone(),
        0,
        RData::TXT(TXT::new(vec![snapshot.live.revision.to_string()])),
    );
    txt.dns_class = DNSClass::CH;
    Some(Built::Records(vec![txt]))
}

/// For `<label>.<directory.zone_name>`: the user's facts (TXT) or serving datacenter's frontend
/// addresses (A/AAAA); REFUSED outside `directory.allow`. `None` for other names.
fn directory_answer(
    request: &MessageRequest,
    snapshot: &Snapshot,
    src: IpAddr,
    lookup: &mut Option<(LookupSource, LookupReason)>,
) -> Option<Built> {
    let query = single_question(request)?;
    let label = snapshot.loaded.zones.directory_label(query.name())?;
    let (Some(view), Some(settings)) = (&snapshot.directory, &snapshot.loaded.config.directory)
    else {
        return None;
    };
    // Switched off by an operator (the `directory_dns` toggle), or not for this client.
    if !snapshot.live.toggles.is_on(Toggle::DirectoryDns) || !settings.allowed(src) {
        return Some(Built::Error(ResponseCode::Refused));
    }
    let Some(user) = std::str::from_utf8(label).ok().and_then(label_to_id) else {
        return Some(Built::Negative(ResponseCode::NXDomain));
    };
    let facts = view.facts(&user);
    *lookup = Some(facts.metric_labels());
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

/// The question of a plain single-question class-IN query.
fn single_question(request: &MessageRequest) -> Option<&LowerQuery> {
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
    request: &MessageRequest,
    snapshot: &Snapshot,
    src: IpAddr,
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
    if !control.explain_allowed(src) {
        return Some(Built::Error(ResponseCode::Refused));
    }
    let Some(client) = client else {
        return Some(Built::Error(ResponseCode::FormErr));
    };
    let explanation = explain_client(
        snapshot,
        &name.base_name().into(),
        RecordType::A,
        src,
        client.ecs,
    );
    Some(Built::Records(txt_records(
        query.original().name(),
        &explanation,
    )))
}

/// The reply to a request: header-level errors first, then the catalog's answer.
///
/// `client` is `None` when the ECS option was malformed.
fn decide<'a>(
    request: &MessageRequest,
    snapshot: &'a Snapshot,
    client: Option<&ClientAddr>,
    transport: Transport,
) -> Reply<'a> {
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
    if let Some(rcode) = meta_type_rcode(request, query.query_type(), transport) {
        return Reply::error(rcode);
    }
    let question = Question {
        name: query.name(),
        original: query.original().name(),
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

/// The rcode of a question whose type asks for something other than records, as Knot DNS
/// answers it, or `None` to look the name up. QTYPE 0 is reserved (RFC 6895 §3.1): NOTIMP for
/// any name and class. Zone transfers are not offered (zones come from configuration
/// management): AXFR over UDP is NOTIMP (it is a TCP-only query, RFC 5936 §4.2), AXFR over TCP
/// and an IXFR carrying its SOA (RFC 1995 §3) are NOTAUTH, as a server that refuses the
/// transfer to this client says (RFC 5936 §2.2.1). The other meta types (MAILA, MAILB, OPT,
/// TSIG, TKEY) and an IXFR without a SOA are looked up like any type: NODATA or NXDOMAIN, as
/// Knot answers them.
fn meta_type_rcode(
    request: &MessageRequest,
    qtype: RecordType,
    transport: Transport,
) -> Option<ResponseCode> {
    match qtype {
        RecordType::ZERO => Some(ResponseCode::NotImp),
        RecordType::AXFR if transport == Transport::Udp => Some(ResponseCode::NotImp),
        RecordType::AXFR => Some(ResponseCode::NotAuth),
        RecordType::IXFR
            if transport == Transport::Tcp
                || request
                    .authorities
                    .iter()
                    .any(|record| record.record_type() == RecordType::SOA) =>
        {
            Some(ResponseCode::NotAuth)
        }
        _ => None,
    }
}
