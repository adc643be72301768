//! The UDP fast path: answers the common query shapes from answers prepared in the snapshot.
//!
//! [`answer`] parses a datagram with a minimal parser (`parse.rs`: one question, class IN,
//! opcode QUERY, at most an OPT with ECS, NSID or cookies), finds the question's name in a map
//! of every name of our zones, and writes the reply: the query's ID and flags, its question as
//! received (case preserved), the prepared sections (`prepared.rs`), and an OPT record built
//! from the query's. Routed names are routed as the general path routes them (the same
//! `answer::route`), and pick the prepared records of the decision's ranking. Nothing is
//! allocated: the reply goes into the caller's buffer.
//!
//! It answers only where its reply is the general path's, byte for byte (the property test
//! below and the fuzz target check exactly that), and returns `None` for everything else: a
//! shape it does not know, a name or type with no prepared answer (wildcards, DNAMEs, CHAOS,
//! `_explain.` and user directory names, rare types), a service with no eligible datacenter, a
//! reply that would not fit the requester's payload size. The general path then answers as if
//! the fast path did not exist.
//!
//! [`StaticAnswers`] is built with the zones (on reload); routed records are prepared with each
//! routing table by `routed.rs`.

mod parse;
mod prepared;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::{ClientSubnet, NSIDPayload};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use crate::routing::ServiceId;

use super::Snapshot;
use super::answer::{Catalog, Question, Reply, RoutedInfo, route};
use super::edns::{ClientAddr, write_nsid};
use super::explain::EXPLAIN_LABEL;
use super::respond::{AnswerLine, Transport};
use super::rrl::ResponseClass;
use super::wire::{Outcome, answer_bytes};
use parse::{HEADER_LEN, MAX_NAME_LEN, parse};

pub(crate) use prepared::Prepared;
pub(crate) use prepared::question;

/// The types prepared at every name (besides those it has): the ones resolvers ask for.
/// Other types, AXFR and IXFR among them, take the general path.
const COMMON_TYPES: [RecordType; 16] = [
    RecordType::A,
    RecordType::NS,
    RecordType::CNAME,
    RecordType::SOA,
    RecordType::PTR,
    RecordType::MX,
    RecordType::TXT,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::NAPTR,
    RecordType::DS,
    RecordType::DNSKEY,
    RecordType::SVCB,
    RecordType::HTTPS,
    RecordType::CAA,
    RecordType::ANY,
];
/// Names whose answers are prepared, at most: a zone far larger is still answered, its other
/// names by the general path, so that a reload does not spend minutes encoding.
const MAX_PREPARED_NAMES: usize = 200_000;
/// The UDP payload limit of a query without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_PAYLOAD: usize = 512;
/// The OPT record's type, and the EDNS option codes we answer with (RFC 6891, 7871, 5001).
const TYPE_OPT: u16 = 41;
const OPTION_ECS: u16 = 8;
const OPTION_NSID: u16 = 3;

/// What the fast path answered, for the caller to count and rate-limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered {
    /// The question's type.
    pub(crate) qtype: u16,
    /// The reply's rcode.
    pub(crate) rcode: u16,
    /// Its class for response rate limiting.
    pub(crate) class: ResponseClass,
    /// The routed part of the answer, if any.
    pub(crate) routed: Option<RoutedInfo>,
    /// The client as located: its address and how many bits of it the asker let us see.
    pub(crate) client: (IpAddr, u8),
}

/// Writes into `out` the reply to `bytes` from `src` (over UDP), when the fast path answers it;
/// `None` (with `out` in an unspecified state) when the general path must.
pub(crate) fn answer(
    snapshot: &Snapshot,
    bytes: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<Answered> {
    let mut lower = [0; MAX_NAME_LEN];
    let query = parse(bytes, &mut lower)?;
    let table = snapshot.loaded.zones.fast();
    let ecs = query
        .edns
        .and_then(|edns| edns.ecs)
        .map(|ecs| ClientSubnet::new(ecs.addr, ecs.source_prefix, 0));
    let client = ClientAddr::from_subnet(ecs, src.ip()).ok()?;
    let (prepared, scope, routed) = match table.find(&lower[..query.name_len], query.qtype)? {
        Found::Prepared(prepared) => (prepared, 0, None),
        Found::Service(service, nodata) => {
            let qtype = RecordType::from(query.qtype);
            let routed = route(
                &snapshot.prepared,
                &snapshot.routing,
                &snapshot.loaded.geo,
                service,
                qtype,
                &client,
            );
            let prepared = match routed.records {
                // Every datacenter is ineligible: SERVFAIL, from the general path.
                None => return None,
                Some(records) if records.is_empty() => nodata?,
                Some(_) => routed.wire?,
            };
            (prepared, routed.scope, Some(routed.info))
        }
    };
    out.clear();
    out.extend_from_slice(&bytes[..2]);
    // QR, opcode QUERY, AA, RD as asked; then CD as asked and the rcode (RFC 1035 §4.1.1).
    out.push(0x80 | u8::from(prepared.authoritative) << 2 | u8::from(query.recursion_desired));
    out.push(u8::from(query.checking_disabled) << 4 | prepared.rcode);
    let [answers, authorities, additionals] = prepared.counts;
    let additionals = additionals.checked_add(u16::from(query.edns.is_some()))?;
    for count in [1, answers, authorities, additionals] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(query.question);
    if !prepared.write_sections(out, HEADER_LEN + query.question.len()) {
        return None;
    }
    let limit = match query.edns {
        None => PLAIN_UDP_PAYLOAD,
        Some(edns) => {
            // As `edns::response_opt`: the requester's size, at least 512, at most ours.
            let payload = edns.max_payload.max(512).min(table.max_udp_payload);
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            // Extended RCODE 0, version 0, DO copied (RFC 3225 §3).
            out.extend_from_slice(&[0, 0, u8::from(edns.dnssec_ok) << 7, 0]);
            let length_at = out.len();
            out.extend_from_slice(&[0, 0]);
            if let Some(ecs) = client.ecs {
                write_ecs(out, ecs, client.reply_scope(scope));
            }
            if let (true, Some(nsid)) = (edns.nsid, &table.nsid) {
                // The payload carries the snapshot's revision, written as `respond` writes it.
                out.extend_from_slice(&OPTION_NSID.to_be_bytes());
                let nsid_at = out.len();
                out.extend_from_slice(&[0, 0]);
                write_nsid(nsid, snapshot.live.revision, out);
                let nsid_len = u16::try_from(out.len() - nsid_at - 2).ok()?;
                out[nsid_at..nsid_at + 2].copy_from_slice(&nsid_len.to_be_bytes());
            }
            let length = u16::try_from(out.len() - length_at - 2).ok()?;
            out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
            usize::from(payload)
        }
    };
    // Too long for the requester: the general path sends it empty with TC.
    if out.len() > limit {
        return None;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        log_answer(
            snapshot,
            &lower[..query.name_len],
            &query,
            src,
            &client,
            prepared,
            scope,
            routed,
        );
    }
    Some(Answered {
        qtype: query.qtype,
        rcode: u16::from(prepared.rcode),
        class: prepared.class(),
        routed,
        client: (client.ip, client.source_prefix),
    })
}

/// The replies of both paths to one UDP datagram `bytes` from `src`: the fast path's (`None`
/// when it leaves the query to the general path) and the general path's (`None`: no reply).
///
/// For the property test and the fuzz target, which assert that the first, when there is one,
/// equals the second byte for byte. Counts nothing and rate-limits nothing.
pub fn both_paths(
    snapshot: &Snapshot,
    bytes: &[u8],
    src: SocketAddr,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut fast = Vec::new();
    let fast = answer(snapshot, bytes, src, &mut fast).map(|_| fast);
    let general = match answer_bytes(snapshot, bytes, src, Transport::Udp, |_, _| {}) {
        Outcome::Reply(reply) => Some(reply.bytes),
        Outcome::Ignore => None,
    };
    (fast, general)
}

/// The general path's `debug` line per answer (`respond.rs`), for an answer of the fast path:
/// operators who turn it on see every answer, whichever path gave it. Called only when the
/// level is on, so its allocation costs nothing otherwise.
#[allow(clippy::too_many_arguments)]
fn log_answer(
    snapshot: &Snapshot,
    name: &[u8],
    query: &parse::Query<'_>,
    src: SocketAddr,
    client: &ClientAddr,
    prepared: &Prepared,
    scope: u8,
    routed: Option<RoutedInfo>,
) {
    AnswerLine {
        src: src.ip(),
        client: client.ip,
        source_prefix: Some(client.source_prefix),
        name: &Name::from_labels(wire_labels(name)).unwrap_or_default(),
        qtype: RecordType::from(query.qtype),
        rcode: ResponseCode::from(0, prepared.rcode),
        scope,
        routed,
        truncated: false,
    }
    .log(snapshot);
}

/// The labels of an uncompressed wire name (as the parser checked it).
fn wire_labels(name: &[u8]) -> Vec<&[u8]> {
    let mut labels = Vec::new();
    let mut at = 0;
    while let Some(&len) = name.get(at).filter(|&&len| len > 0) {
        labels.extend(name.get(at + 1..at + 1 + usize::from(len)));
        at += 1 + usize::from(len);
    }
    labels
}

/// The ECS option of a reply: the query's family, source prefix and address, our scope.
fn write_ecs(out: &mut Vec<u8>, ecs: ClientSubnet, scope: u8) {
    let source = ecs.source_prefix();
    let address_len = usize::from(source).div_ceil(8);
    let (family, octets): (u16, &[u8]) = match ecs.addr() {
        IpAddr::V4(v4) => (1, &v4.octets()[..]),
        IpAddr::V6(v6) => (2, &v6.octets()[..]),
    };
    out.extend_from_slice(&OPTION_ECS.to_be_bytes());
    out.extend_from_slice(&(4 + address_len as u16).to_be_bytes());
    out.extend_from_slice(&family.to_be_bytes());
    out.extend_from_slice(&[source, scope]);
    out.extend_from_slice(&octets[..address_len]);
}

/// The prepared answers of the zones: every name, by lowercase wire form.
#[derive(Debug, Default)]
pub(crate) struct StaticAnswers {
    /// Every name of every zone (in the zone that answers for it), empty non-terminals
    /// included, so that a name that is not here does not exist. Hashed with foldhash, seeded
    /// per process, rather than SipHash: a lookup per query (and one per label above an
    /// NXDOMAIN name), and the map is never written after it is built, so a client's names
    /// cannot grow its chains.
    names: HashMap<Box<[u8]>, NameAnswers, foldhash::fast::RandomState>,
    /// The answers, each once: many names share their NODATA answer.
    pool: Vec<Prepared>,
    /// `directory.zone_name` in lowercase wire form: the user directory answers below it.
    directory: Option<Box<[u8]>>,
    /// The NSID payload (RFC 5001), when it can be one.
    nsid: Option<Box<[u8]>>,
    /// `server.max_udp_payload`.
    max_udp_payload: u16,
}

/// The prepared answers of one name.
#[derive(Debug, Default)]
struct NameAnswers {
    /// By question type, sorted: indexes into the pool.
    by_type: Box<[(u16, u32)]>,
    /// The service routed at this name, with its NODATA answer (for an empty address family).
    service: Option<(ServiceId, Option<u32>)>,
    /// The answer for names below this one that do not exist (NXDOMAIN), when no wildcard,
    /// delegation or DNAME makes it something else.
    below: Option<u32>,
}

/// What the table holds for a question.
enum Found<'a> {
    /// This answer.
    Prepared(&'a Prepared),
    /// Route the service; this is its NODATA answer, if prepared.
    Service(ServiceId, Option<&'a Prepared>),
}

impl StaticAnswers {
    /// Prepares the answers of every name of `catalog`, as its own `respond` gives them.
    pub(crate) fn build(catalog: &Catalog, identity: &[u8], max_udp_payload: u16) -> Self {
        let mut builder = Builder::default();
        let mut names = HashMap::default();
        for zone in catalog.zones() {
            for (name, node) in zone.nodes() {
                // A name of this zone that a deeper zone of ours answers for is that zone's.
                if !catalog
                    .zone_for(name)
                    .is_some_and(|answering| std::ptr::eq(answering, zone))
                {
                    continue;
                }
                let Ok(key) = name.to_bytes() else { continue };
                let answers = if names.len() < MAX_PREPARED_NAMES {
                    builder.name(catalog, name, node.service, node.types())
                } else {
                    NameAnswers::default()
                };
                names.insert(key.into_boxed_slice(), answers);
            }
        }
        StaticAnswers {
            names,
            pool: builder.pool,
            directory: catalog
                .directory_zone()
                .and_then(|zone| zone.to_bytes().ok())
                .map(Vec::into_boxed_slice),
            nsid: NSIDPayload::new(identity)
                .ok()
                .map(|payload| payload.as_ref().into()),
            max_udp_payload,
        }
    }

    /// The answer for `name` (lowercase wire form) and `qtype`, if prepared.
    fn find(&self, name: &[u8], qtype: u16) -> Option<Found<'_>> {
        // `_explain.` names are answered by running the query (`respond.rs`), user directory
        // names from the directory: both by the general path.
        let first = name.get(1..1 + usize::from(*name.first()?))?;
        if first == EXPLAIN_LABEL
            || self
                .directory
                .as_ref()
                .is_some_and(|zone| name.ends_with(zone))
        {
            return None;
        }
        if let Some(answers) = self.names.get(name) {
            if let Some((service, nodata)) = answers.service
                && matches!(
                    RecordType::from(qtype),
                    RecordType::A | RecordType::AAAA | RecordType::ANY
                )
            {
                let nodata = nodata.map(|i| &self.pool[i as usize]);
                return Some(Found::Service(service, nodata));
            }
            let at = answers
                .by_type
                .binary_search_by_key(&qtype, |(t, _)| *t)
                .ok()?;
            return Some(Found::Prepared(&self.pool[answers.by_type[at].1 as usize]));
        }
        if !COMMON_TYPES.contains(&RecordType::from(qtype)) {
            return None;
        }
        // The closest encloser: the longest existing name above this one.
        let mut at = 0;
        while at < name.len() - 1 {
            at += 1 + usize::from(name[at]);
            if let Some(answers) = self.names.get(&name[at..]) {
                return Some(Found::Prepared(&self.pool[answers.below? as usize]));
            }
        }
        None
    }
}

/// Builds the pool of a [`StaticAnswers`], keeping each distinct answer once.
#[derive(Default)]
struct Builder {
    pool: Vec<Prepared>,
    index: HashMap<Prepared, u32>,
}

impl Builder {
    fn name(
        &mut self,
        catalog: &Catalog,
        name: &LowerName,
        service: Option<ServiceId>,
        types: impl Iterator<Item = RecordType>,
    ) -> NameAnswers {
        let mut types: Vec<RecordType> = COMMON_TYPES.into_iter().chain(types).collect();
        types.sort_by_key(|t| u16::from(*t));
        types.dedup();
        let mut res = NameAnswers::default();
        let mut by_type = Vec::new();
        let original = Name::from(name.clone());
        for qtype in types {
            let reply = catalog.respond_static(in_class(name, &original, qtype));
            // A routed answer depends on the client: the service's own name is routed by the
            // fast path; a CNAME to it is left to the general path.
            if reply.routed.is_some() || !reply.built.is_empty() {
                continue;
            }
            if let Some(prepared) =
                question(name, u16::from(qtype)).and_then(|q| Prepared::encode(&q, reply))
            {
                by_type.push((u16::from(qtype), self.intern(prepared)));
            }
        }
        res.by_type = by_type.into();
        if let Some(service) = service {
            // An address family the ranking's datacenters do not have: NODATA, as
            // `answer.rs` answers it.
            let nodata = catalog
                .zone_for(name)
                .map(|zone| Reply::negative(ResponseCode::NoError, Some(&zone.negative_soa)))
                .and_then(|reply| Prepared::encode(&question(name, 1)?, reply));
            res.service = Some((service, nodata.map(|p| self.intern(p))));
        }
        res.below = self.below(catalog, name);
        res
    }

    /// NXDOMAIN for the names below `name` that do not exist, found by asking for three such
    /// names of different lengths: the answer is the same for every one of them when none
    /// exists, since it depends only on their closest encloser, `name`.
    fn below(&mut self, catalog: &Catalog, name: &LowerName) -> Option<u32> {
        let probes: Vec<LowerName> = ["-meridian-nx-", "-meridian-nx--", "-meridian-nx-probe---"]
            .into_iter()
            .map(|label| {
                let child =
                    Name::from_labels(std::iter::once(label.as_bytes()).chain(name.iter())).ok()?;
                Some(LowerName::new(&child))
            })
            .collect::<Option<_>>()?;
        let zone = catalog.zone_for(name)?;
        let originals: Vec<Name> = probes
            .iter()
            .map(|probe| Name::from(probe.clone()))
            .collect();
        for (probe, original) in probes.iter().zip(&originals) {
            let reply = catalog.respond_static(in_class(probe, original, RecordType::A));
            let plain = reply.rcode == ResponseCode::NXDomain
                && reply.routed.is_none()
                && reply.built.is_empty()
                && reply.answers.n_parts() == 0
                && catalog
                    .zone_for(probe)
                    .is_some_and(|answering| std::ptr::eq(answering, zone));
            if !plain {
                return None;
            }
        }
        let questions: Vec<Vec<u8>> = probes
            .iter()
            .map(|probe| question(probe, u16::from(RecordType::A)))
            .collect::<Option<_>>()?;
        let prepared =
            Prepared::encode_movable([&questions[0], &questions[1], &questions[2]], || {
                catalog.respond_static(in_class(&probes[0], &originals[0], RecordType::A))
            })?;
        Some(self.intern(prepared))
    }

    fn intern(&mut self, prepared: Prepared) -> u32 {
        let next = u32::try_from(self.pool.len()).expect("fewer answers than names times types");
        *self.index.entry(prepared.clone()).or_insert_with(|| {
            self.pool.push(prepared);
            next
        })
    }
}

fn in_class<'q>(name: &'q LowerName, original: &'q Name, qtype: RecordType) -> Question<'q> {
    Question {
        name,
        original,
        qtype,
        qclass: DNSClass::IN,
    }
}
