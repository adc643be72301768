//! From a question to the records of a reply: zone lookups, CNAME chains (through DNAMEs too),
//! routed service answers, CHAOS identity and the negative answers with their SOA.
//!
//! Everything a reply holds is borrowed from the snapshot: the records of every routing outcome
//! are prepared when the snapshot is built ([`Catalog::build`]), so answering allocates nothing
//! on the common paths.

use std::path::PathBuf;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{CNAME, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::config::{Config, Problem};
use crate::geo::{GeoDb, GeoHit};
use crate::routing::{Client, DcId, Family, RoutingTable, ServiceId};

use super::edns::ClientAddr;
use super::fast::{Prepared, StaticAnswers};
use super::routed::Answers;
use super::rrset::RecordSet;
use super::zone::{Lookup, Zone};

/// How many CNAMEs we follow inside our own zones before handing the rest to the resolver.
const MAX_CNAME_HOPS: usize = 8;
/// Most DNAMEs followed in one answer.
const MAX_DNAMES: usize = 1;
/// Slices a section can be assembled from: a CNAME chain plus its final answer.
const MAX_PARTS: usize = MAX_CNAME_HOPS + 1;

/// CHAOS `revision.meridian.`: TXT (and ANY) show the state revision the snapshot serves. They
/// are built per query by `respond`, since the revision changes without a reload; the catalog
/// only knows the name, so that its other types get NOERROR like `id.server`'s.
pub(crate) static REVISION_NAME: std::sync::LazyLock<LowerName> = std::sync::LazyLock::new(|| {
    LowerName::new(&Name::from_ascii("revision.meridian.").expect("constant name"))
});

/// The static DNS side of a snapshot: zones and identity records, built on reload.
#[derive(Debug)]
pub struct Catalog {
    /// Zones, most labels first, so the first match is the longest.
    zones: Vec<Zone>,
    id_server: ChaosName,
    hostname_bind: ChaosName,
    /// CHAOS `version.bind` and `version.server`, when `server.version` is set; otherwise they
    /// are REFUSED like any other unknown CHAOS name, so the version is not advertised.
    version: Option<[ChaosName; 2]>,
    identity: Vec<u8>,
    max_udp_payload: u16,
    /// `directory.zone_name`: `<user>.<this>` is answered from the user directory.
    directory_zone: Option<LowerName>,
    /// The answers of every name, prepared for the UDP fast path.
    fast: StaticAnswers,
}

#[derive(Debug)]
struct ChaosName {
    name: LowerName,
    txt: RecordSet,
}

/// A question, as the handler received it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Question<'q> {
    pub(crate) name: &'q LowerName,
    /// The name as asked (its case), which owns synthesized records.
    pub(crate) original: &'q Name,
    pub(crate) qtype: RecordType,
    pub(crate) qclass: DNSClass,
}

/// Records for one section, assembled from borrowed record sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section<'a> {
    parts: [&'a [Record]; MAX_PARTS],
    /// Each part's uncompressed wire length.
    lens: [usize; MAX_PARTS],
    len: usize,
    /// Sum of the parts' uncompressed wire lengths.
    wire_len: usize,
}

impl<'a> Section<'a> {
    const EMPTY: Section<'a> = Section {
        parts: [&[]; MAX_PARTS],
        lens: [0; MAX_PARTS],
        len: 0,
        wire_len: 0,
    };

    fn one(records: &'a RecordSet) -> Self {
        let mut section = Self::EMPTY;
        section.push(records);
        section
    }

    fn push(&mut self, records: &'a RecordSet) {
        self.parts[self.len] = records.records();
        self.lens[self.len] = records.wire_len();
        self.len += 1;
        self.wire_len += records.wire_len();
    }

    /// The first `n` parts.
    fn first_parts(mut self, n: usize) -> Self {
        while self.len > n {
            self.len -= 1;
            self.wire_len -= self.lens[self.len];
            self.parts[self.len] = &[];
            self.lens[self.len] = 0;
        }
        self
    }

    /// The records, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a Record> + Send + 'a {
        self.iter_parts(0, self.len)
    }

    /// The records of parts `from..to` (clamped to the parts there are), in order.
    pub(crate) fn iter_parts(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = &'a Record> + Send + 'a {
        let parts = self.parts;
        let to = to.min(self.len);
        (from.min(to)..to).flat_map(move |i| parts[i].iter())
    }

    /// How many record sets the section holds.
    pub(crate) fn n_parts(&self) -> usize {
        self.len
    }
}

/// What to send back, minus the header bits the handler owns.
#[derive(Debug, Clone)]
pub(crate) struct Reply<'a> {
    pub(crate) rcode: ResponseCode,
    pub(crate) authoritative: bool,
    pub(crate) answers: Section<'a>,
    pub(crate) authorities: Section<'a>,
    pub(crate) additionals: Section<'a>,
    /// How many parts of `additionals` a UDP reply must carry whole or be truncated (a
    /// referral's in-domain glue, RFC 9471 §3); the rest (addresses of targets, sibling glue)
    /// are left out when they do not fit.
    pub(crate) required_additionals: usize,
    /// ECS scope prefix in the client address's family: 0 unless the answer was routed.
    pub(crate) scope: u8,
    /// The routed part of the answer, if any.
    pub(crate) routed: Option<RoutedInfo>,
    /// Records built for this query alone, each after the number of `answers`' record sets it
    /// follows: a wildcard's records owned by the name they answer for (RFC 4592 §3.3.1), the
    /// CNAME a DNAME stands for (RFC 6672 §3.2), an explanation or a directory answer.
    pub(crate) built: Vec<(usize, RecordSet)>,
    /// DNAMEs followed so far.
    n_dnames: usize,
}

impl<'a> Reply<'a> {
    /// Upper bound of the records' size on the wire (header, question and OPT not included).
    pub(crate) fn records_wire_len(&self) -> usize {
        self.answers.wire_len
            + self.authorities.wire_len
            + self.additionals.wire_len
            + self
                .built
                .iter()
                .map(|(_, set)| set.wire_len())
                .sum::<usize>()
    }

    /// Adds `records`, built for this query, after the answer's record sets so far.
    pub(crate) fn push_built(&mut self, records: Vec<Record>) {
        self.built
            .push((self.answers.n_parts(), RecordSet::new(records)));
    }

    /// The answer section: the record sets and the built records in chain order.
    pub(crate) fn answer_records(&self) -> impl Iterator<Item = &Record> + Send + '_ {
        let answers = &self.answers;
        (0..=answers.n_parts()).flat_map(move |part| {
            self.built
                .iter()
                .filter(move |(at, _)| *at == part)
                .flat_map(|(_, set)| set.records().iter())
                .chain(answers.iter_parts(part, part + 1))
        })
    }

    /// The same reply without records, for a UDP response whose records do not fit: the client
    /// sees TC and retries over TCP (RFC 6891 §7, RFC 2181 §9).
    pub(crate) fn without_records(self) -> Self {
        Reply {
            answers: Section::EMPTY,
            authorities: Section::EMPTY,
            additionals: Section::EMPTY,
            required_additionals: 0,
            built: Vec::new(),
            ..self
        }
    }

    /// The same reply without the additional records it may leave out.
    pub(crate) fn without_optional_additionals(self) -> Self {
        Reply {
            additionals: self.additionals.first_parts(self.required_additionals),
            ..self
        }
    }

    /// Whether the reply carries additional records it may leave out.
    pub(crate) fn has_optional_additionals(&self) -> bool {
        self.additionals.n_parts() > self.required_additionals
    }

    /// An authoritative NOERROR reply with `records` as its answer: a routed service's.
    pub(crate) fn answer(records: &'a RecordSet) -> Self {
        Reply {
            answers: Section::one(records),
            ..Reply::no_error()
        }
    }

    /// An authoritative NOERROR reply with no records yet.
    pub(crate) fn no_error() -> Self {
        Reply {
            authoritative: true,
            ..Reply::error(ResponseCode::NoError)
        }
    }

    /// An authoritative negative reply (NXDOMAIN or NODATA) with the zone's SOA.
    pub(crate) fn negative(rcode: ResponseCode, soa: Option<&'a RecordSet>) -> Self {
        let mut reply = Reply {
            authoritative: true,
            ..Reply::error(rcode)
        };
        if let Some(soa) = soa {
            reply.authorities = Section::one(soa);
        }
        reply
    }

    /// A reply with only a status: no records, not authoritative.
    pub(crate) fn error(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            authoritative: false,
            answers: Section::EMPTY,
            authorities: Section::EMPTY,
            additionals: Section::EMPTY,
            required_additionals: 0,
            scope: 0,
            routed: None,
            built: Vec::new(),
            n_dnames: 0,
        }
    }
}

impl Catalog {
    /// Parses the zones and marks the service names in them.
    ///
    /// `zone_texts` holds each configured zone's master file text and path, in configuration
    /// order.
    ///
    /// # Errors
    ///
    /// Every problem in every zone, under the zone's place in the configuration (`zones[i]`),
    /// each naming its file and line.
    pub fn build(
        config: &Config,
        zone_texts: &[(String, PathBuf)],
        identity: &str,
    ) -> Result<Catalog, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut zones = Vec::new();
        for (i, (zone, (text, path))) in config.zones.iter().zip(zone_texts).enumerate() {
            // A service belongs to the deepest zone that contains it.
            let services: Vec<(ServiceId, &str)> = config
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| deepest_zone(config, &s.name) == Some(i))
                .map(|(id, s)| (service_id(id), s.name.as_str()))
                .collect();
            match Zone::parse(&zone.origin, text, path.clone(), &services) {
                Ok(zone) => zones.push(zone),
                // Each message names the file and line already.
                Err(messages) => problems.extend(
                    messages
                        .into_iter()
                        .map(|message| Problem::new(format!("zones[{i}]"), message)),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        zones.sort_by_key(|zone| std::cmp::Reverse(zone.origin.num_labels()));
        let mut catalog = Catalog {
            zones,
            id_server: ChaosName::new("id.server.", identity),
            hostname_bind: ChaosName::new("hostname.bind.", identity),
            version: config.server.version.as_deref().map(|version| {
                [
                    ChaosName::new("version.bind.", version),
                    ChaosName::new("version.server.", version),
                ]
            }),
            identity: identity.as_bytes().to_vec(),
            max_udp_payload: config.server.max_udp_payload,
            directory_zone: config
                .directory
                .as_ref()
                .and_then(|d| d.zone_name.as_ref())
                .map(|zone| {
                    LowerName::new(&Name::from_ascii(format!("{zone}.")).expect("validated name"))
                }),
            fast: StaticAnswers::default(),
        };
        catalog.fast =
            StaticAnswers::build(&catalog, identity.as_bytes(), config.server.max_udp_payload);
        Ok(catalog)
    }

    /// The answers prepared for the fast path.
    pub(crate) fn fast(&self) -> &StaticAnswers {
        &self.fast
    }

    /// The user label of `name` when `name` is `<label>.<directory zone>`.
    pub(crate) fn directory_label<'n>(&self, name: &'n LowerName) -> Option<&'n [u8]> {
        let zone = self.directory_zone.as_ref()?;
        if name.num_labels() != zone.num_labels() + 1 || !zone.zone_of(name) {
            return None;
        }
        name.iter().next()
    }

    /// The negative-answer SOA of the zone holding `name`.
    pub(crate) fn negative_soa(&self, name: &LowerName) -> Option<&RecordSet> {
        self.zone_of(name).map(|zone| &zone.negative_soa)
    }

    /// The NSID payload (RFC 5001).
    pub(crate) fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The largest UDP response we send.
    pub(crate) fn max_udp_payload(&self) -> u16 {
        self.max_udp_payload
    }

    /// Number of zones and of names with records, for logs.
    pub fn summary(&self) -> (usize, usize) {
        let names = self.zones.iter().map(Zone::n_names).sum();
        (self.zones.len(), names)
    }

    /// Answers one question.
    pub(crate) fn respond<'a>(
        &'a self,
        answers: &'a Answers,
        routing: &RoutingTable,
        geo: &GeoDb,
        question: Question<'_>,
        client: &ClientAddr,
    ) -> Reply<'a> {
        let router = Router {
            answers,
            routing,
            geo,
            client,
        };
        self.respond_with(Some(&router), question)
    }

    /// Answers one question from the zones alone, for the fast path's prepared answers: a
    /// question that reaches a routed service gets a reply whose `routed` is set and which must
    /// not be used (its records depend on the client).
    pub(crate) fn respond_static(&self, question: Question<'_>) -> Reply<'_> {
        self.respond_with(None, question)
    }

    /// The zones in the order `respond` searches them (most labels first), for the fast path.
    pub(crate) fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zone answering for `name`: the deepest of ours containing it.
    pub(crate) fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        self.zone_of(name)
    }

    /// `directory.zone_name`, when configured.
    pub(crate) fn directory_zone(&self) -> Option<&LowerName> {
        self.directory_zone.as_ref()
    }

    fn respond_with<'a>(
        &'a self,
        router: Option<&Router<'a, '_>>,
        question: Question<'_>,
    ) -> Reply<'a> {
        match question.qclass {
            DNSClass::IN => {}
            DNSClass::CH => return self.chaos(question),
            _ => return Reply::error(ResponseCode::Refused),
        }
        // RFC 4035 §3.1.4.1: the DS RRset at a zone's apex is the parent's data, so when we
        // serve the parent too, the parent answers.
        let parent = (question.qtype == RecordType::DS)
            .then(|| {
                self.zones.iter().find(|zone| {
                    zone.origin != *question.name && zone.origin.zone_of(question.name)
                })
            })
            .flatten();
        let Some(zone) = parent.or_else(|| self.zone_of(question.name)) else {
            return Reply::error(ResponseCode::Refused);
        };
        self.resolve_in_zone(router, zone, question)
    }

    fn zone_of(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|zone| zone.origin.zone_of(name))
    }

    fn resolve_in_zone<'a>(
        &'a self,
        router: Option<&Router<'a, '_>>,
        mut zone: &'a Zone,
        question: Question<'_>,
    ) -> Reply<'a> {
        let mut reply = Reply {
            authoritative: true,
            ..Reply::error(ResponseCode::NoError)
        };
        // Owned only when following a CNAME: the name as the chain wrote it (a CNAME's target,
        // a DNAME's rewrite), which owns what a wildcard or DNAME synthesizes for it. The first
        // name is the question's own.
        let mut target: Option<(LowerName, Name)> = None;
        // The names of the chain so far, for loop protection (only a chain allocates).
        let mut visited: Vec<LowerName> = Vec::new();
        for hop in 0..=MAX_CNAME_HOPS {
            let (name, written) = match &target {
                Some((name, written)) => (name, written),
                None => (question.name, question.original),
            };
            // RFC 4035 §3.1.4.1: DS at a delegation point is the parent's data, answered
            // authoritatively (the RRset, or NODATA with the parent's SOA), not referred.
            let lookup = match zone.delegation_node(name) {
                Some(node) if question.qtype == RecordType::DS => Lookup::Node(node),
                _ => zone.lookup(name),
            };
            // The next name of the chain, when this one is an alias.
            let next: Name = match lookup {
                Lookup::Node(node) => {
                    if let Some(service) = node.service
                        && matches!(
                            question.qtype,
                            RecordType::A | RecordType::AAAA | RecordType::ANY
                        )
                    {
                        let Some(router) = router else {
                            // Answering from the zones alone: the caller sees `routed` and
                            // stops.
                            return Reply {
                                routed: Some(RoutedInfo {
                                    service,
                                    first: None,
                                    failed_open: false,
                                    order: (0, 1),
                                }),
                                ..Reply::error(ResponseCode::ServFail)
                            };
                        };
                        let routed = route(
                            router.answers,
                            router.routing,
                            router.geo,
                            service,
                            question.qtype,
                            router.client,
                        );
                        reply.scope = reply.scope.max(routed.scope);
                        reply.routed = Some(routed.info);
                        let Some(records) = routed.records else {
                            // Every datacenter is ineligible and the service asks for SERVFAIL.
                            return Reply::error(ResponseCode::ServFail);
                        };
                        if records.is_empty() {
                            reply.authorities = Section::one(&zone.negative_soa);
                        } else {
                            reply.answers.push(records);
                        }
                        return reply;
                    }
                    let records = node.rrset(question.qtype).or_else(|| {
                        // RFC 8482 §4.1: answer ANY with one RRset of the name.
                        (question.qtype == RecordType::ANY)
                            .then(|| node.first_rrset())
                            .flatten()
                    });
                    if let Some(records) = records {
                        reply.answers.push(records);
                        if let Some(addresses) = node.additional(records) {
                            reply.additionals.push(addresses);
                        }
                        return reply;
                    }
                    // RRSIG and NSEC queries are about the name itself, never followed through
                    // its CNAME (RFC 4035 §3.1.1, RFC 6672's and RFC 1034's exceptions).
                    let follows = !matches!(question.qtype, RecordType::RRSIG | RecordType::NSEC);
                    let Some((records, next)) = node
                        .rrset(RecordType::CNAME)
                        .filter(|_| follows)
                        .and_then(|records| Some((records, cname_target(records)?)))
                    else {
                        // NODATA: the name exists, the type does not (RFC 2308 §2.2).
                        reply.authorities = Section::one(&zone.negative_soa);
                        return reply;
                    };
                    reply.answers.push(records);
                    next.clone()
                }
                Lookup::Dname(dname) => {
                    if reply.n_dnames == MAX_DNAMES {
                        // The resolver follows further DNAMEs from here.
                        return reply;
                    }
                    // RFC 6672 §3.2: the DNAME, then a CNAME from the name to its rewrite,
                    // then on with the rewritten name.
                    reply.answers.push(dname.records);
                    reply.n_dnames += 1;
                    let Some(next) = dname.substitute(written) else {
                        // RFC 6672 §2.2: the rewritten name would be longer than 255 octets.
                        reply.rcode = ResponseCode::YXDomain;
                        return reply;
                    };
                    // RFC 6672 §3.1: owned by the name as written, with the DNAME's TTL.
                    let cname = Record::from_rdata(
                        written.clone(),
                        dname.ttl(),
                        RData::CNAME(CNAME(next.clone())),
                    );
                    reply.push_built(vec![cname]);
                    if question.qtype == RecordType::CNAME {
                        return reply;
                    }
                    next
                }
                Lookup::Wildcard(node) => {
                    // RFC 4592 §3.3.1: the wildcard's records, owned by the name they answer
                    // for; a wildcard CNAME is followed like any other.
                    let records = node.rrset(question.qtype).or_else(|| {
                        (question.qtype == RecordType::ANY)
                            .then(|| node.first_rrset())
                            .flatten()
                    });
                    if let Some(records) = records {
                        reply.push_built(owned_by(records, written));
                        if let Some(addresses) = node.additional(records) {
                            reply.additionals.push(addresses);
                        }
                        return reply;
                    }
                    let Some((records, next)) = node
                        .rrset(RecordType::CNAME)
                        .and_then(|records| Some((records, cname_target(records)?)))
                    else {
                        reply.authorities = Section::one(&zone.negative_soa);
                        return reply;
                    };
                    reply.push_built(owned_by(records, written));
                    next.clone()
                }
                Lookup::NxDomain => {
                    // RFC 6604 §3: the rcode describes the last name of a CNAME chain.
                    reply.rcode = ResponseCode::NXDomain;
                    reply.authorities = Section::one(&zone.negative_soa);
                    return reply;
                }
                Lookup::Referral(cut) => {
                    if hop == 0 {
                        // RFC 1034 §4.3.2: below a cut we are not authoritative; refer.
                        reply.authoritative = false;
                        reply.authorities = Section::one(&cut.ns);
                        reply.additionals = Section::one(&cut.glue);
                        reply.required_additionals = 1;
                        reply.additionals.push(&cut.other_addresses);
                    }
                    return reply;
                }
            };
            // Loop protection: a name seen before ends the chain (the resolver sees the loop).
            visited.push(name.clone());
            let lower = LowerName::new(&next);
            if visited.contains(&lower) {
                return reply;
            }
            match self.zone_of(&lower) {
                Some(next_zone) if hop < MAX_CNAME_HOPS => {
                    zone = next_zone;
                    target = Some((lower, next));
                }
                // Outside our zones, or a long chain: the resolver follows it from here.
                _ => return reply,
            }
        }
        reply
    }

    fn chaos(&self, question: Question<'_>) -> Reply<'_> {
        let known = [&self.id_server, &self.hostname_bind]
            .into_iter()
            .chain(self.version.iter().flatten())
            .find(|chaos| chaos.name == *question.name);
        match known {
            Some(chaos) if matches!(question.qtype, RecordType::TXT | RecordType::ANY) => Reply {
                authoritative: true,
                answers: Section::one(&chaos.txt),
                ..Reply::error(ResponseCode::NoError)
            },
            Some(_) => Reply {
                authoritative: true,
                ..Reply::error(ResponseCode::NoError)
            },
            None if *question.name == *REVISION_NAME => Reply {
                authoritative: true,
                ..Reply::error(ResponseCode::NoError)
            },
            None => Reply::error(ResponseCode::Refused),
        }
    }
}

impl ChaosName {
    fn new(name: &str, identity: &str) -> Self {
        let name = Name::from_ascii(name).expect("constant name");
        let mut txt = Record::from_rdata(
            name.clone(),
            0,
            RData::TXT(TXT::new(vec![identity.to_owned()])),
        );
        txt.dns_class = DNSClass::CH;
        ChaosName {
            name: LowerName::new(&name),
            txt: RecordSet::new([txt]),
        }
    }
}

/// What routing a service's name needs besides the zones.
struct Router<'a, 'r> {
    answers: &'a Answers,
    routing: &'r RoutingTable,
    geo: &'r GeoDb,
    client: &'r ClientAddr,
}

/// A routed answer: its records (`None`: SERVFAIL), ECS scope and what to count.
pub(crate) struct Routed<'a> {
    /// The records (`None`: SERVFAIL, every datacenter is ineligible).
    pub(crate) records: Option<&'a RecordSet>,
    /// Their wire form as the fast path sends them, when prepared.
    pub(crate) wire: Option<&'a Prepared>,
    /// The ECS scope in the client address's family.
    pub(crate) scope: u8,
    /// What to count.
    pub(crate) info: RoutedInfo,
}

/// What a routed answer was, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoutedInfo {
    /// The service.
    pub(crate) service: ServiceId,
    /// The datacenter ranked first, if any.
    pub(crate) first: Option<DcId>,
    /// Every datacenter was ineligible and the service failed open.
    pub(crate) failed_open: bool,
    /// Which order of the addresses the answer gave (0: as configured), of how many its
    /// rotation has.
    pub(crate) order: (u8, u8),
}

/// A client as routing sees it.
pub(crate) struct Located {
    /// Routing's view of the client.
    pub(crate) client: Client,
    /// What the geo database said.
    pub(crate) hit: GeoHit,
}

impl Located {
    /// Locates `client` in `geo`: the same steps for DNS answers and explanations.
    pub(crate) fn new(geo: &GeoDb, client: &ClientAddr) -> Located {
        let client = Client::locate(geo, client.ip, client.source_prefix);
        Located {
            hit: client.hit(),
            client,
        }
    }
}

/// The addresses of a service for this client, and the ECS scope they hold for.
pub(crate) fn route<'a>(
    answers: &'a Answers,
    routing: &RoutingTable,
    geo: &GeoDb,
    service: ServiceId,
    qtype: RecordType,
    client: &ClientAddr,
) -> Routed<'a> {
    let located = Located::new(geo, client);
    let family = match qtype {
        RecordType::A => Family::A,
        RecordType::AAAA => Family::Aaaa,
        _ => Family::Any,
    };
    let decision = routing.resolve(service, &located.client, family);
    let scope = decision.prefix_len;
    let routable = !decision.datacenters.is_empty();
    let picked = routable.then(|| answers.pick(service, decision.ranking, qtype));
    let info = RoutedInfo {
        service,
        first: decision.datacenters.first().copied(),
        failed_open: decision.failed_open,
        order: picked.map_or((0, 1), |picked| picked.order),
    };
    Routed {
        records: picked.map(|picked| picked.records),
        wire: picked.and_then(|picked| picked.wire),
        scope,
        info,
    }
}

/// The target of a CNAME record set.
fn cname_target(records: &RecordSet) -> Option<&Name> {
    match &records.records().first()?.data {
        RData::CNAME(cname) => Some(&cname.0),
        _ => None,
    }
}

/// `records` (a wildcard's) given `owner` as their name.
fn owned_by(records: &RecordSet, owner: &Name) -> Vec<Record> {
    records
        .records()
        .iter()
        .map(|record| {
            let mut record = record.clone();
            record.name = owner.clone();
            record
        })
        .collect()
}

/// The index of the deepest configured zone containing `name`.
fn deepest_zone(config: &Config, name: &str) -> Option<usize> {
    config
        .zones
        .iter()
        .enumerate()
        .filter(|(_, zone)| crate::config::is_in_zone(name, &zone.origin))
        .max_by_key(|(_, zone)| zone.origin.len())
        .map(|(i, _)| i)
}

fn service_id(index: usize) -> ServiceId {
    ServiceId(u16::try_from(index).expect("service count is bounded by the config"))
}
