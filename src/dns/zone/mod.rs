//! Static zone data from RFC 1035 master files, indexed for lookups by exact name.
//!
//! Built once per snapshot; lookups borrow records from it and never allocate on the paths a
//! busy server takes (exact hits, NODATA). Routed names are marked here as services; their
//! addresses come from `answer.rs`.

mod checks;
mod lexer;
mod rdata;
mod reader;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::routing::ServiceId;

use super::rrset::RecordSet;
use checks::Drafts;
use rdata::{to_rdata, type_name};

/// At most this many problems are reported per zone file; the rest are counted.
const MAX_PROBLEMS: usize = 100;

/// One authoritative zone.
#[derive(Debug)]
pub(crate) struct Zone {
    pub(crate) origin: LowerName,
    /// The SOA for the authority section of negative answers; its TTL is the negative-caching
    /// TTL of RFC 2308 §5: the smaller of the SOA's own TTL and its MINIMUM field.
    pub(crate) negative_soa: RecordSet,
    nodes: HashMap<LowerName, Node>,
    /// Delegation points below the apex (names with NS records), for referrals.
    cuts: Vec<Cut>,
}

/// The records at one name. Names that exist only because a name below them exists (empty
/// non-terminals, RFC 8020) have a node with no record sets, so they answer NODATA.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Record sets, one per type, in zone-file order.
    rrsets: Vec<(RecordType, RecordSet)>,
    /// The service answered at this name, if any.
    pub(crate) service: Option<ServiceId>,
    /// The target of the DNAME at this name, if any (the checks allow one per name).
    dname_target: Option<Name>,
    /// For each NS, MX and SRV record set here: the A and AAAA records of its targets that
    /// this zone holds authoritatively, for the additional section (RFC 1034 §4.3.2 step 6).
    additionals: Vec<(RecordType, RecordSet)>,
}

/// A delegation to another server.
#[derive(Debug)]
pub(crate) struct Cut {
    pub(crate) name: LowerName,
    pub(crate) ns: RecordSet,
    /// Addresses of the delegated servers that lie inside the cut (in-domain glue, RFC 9471
    /// §2.1): a referral that cannot carry them all is truncated.
    pub(crate) glue: RecordSet,
    /// Addresses of the delegated servers held elsewhere in this zone (sibling glue under
    /// another cut, RFC 9471 §2.2, and the zone's own names): sent when they fit.
    pub(crate) other_addresses: RecordSet,
}

/// Where a name stands in a zone.
pub(crate) enum Lookup<'z> {
    /// The name exists.
    Node(&'z Node),
    /// The name does not exist, but its closest encloser has a wildcard child that answers for
    /// it (RFC 4592 §3.3.1); the records must be given the queried name as owner.
    Wildcard(&'z Node),
    /// The name is at or below a delegation point.
    Referral(&'z Cut),
    /// The name is below a DNAME's owner and is redirected by it (RFC 6672 §2.2).
    Dname(Dname<'z>),
    /// The name does not exist.
    NxDomain,
}

/// A DNAME found above a name: its records, and how to rewrite the name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dname<'z> {
    /// The DNAME RRset, which goes into the answer before the synthesized CNAME.
    pub(crate) records: &'z RecordSet,
    /// The number of labels of the DNAME's owner.
    owner_labels: u8,
    target: &'z Name,
}

impl Dname<'_> {
    /// The CNAME target for `name` (which is below the DNAME's owner): its labels above the
    /// owner followed by the DNAME's target (RFC 6672 §2.2). `None` when the result is longer
    /// than 255 octets, which the server answers with YXDOMAIN.
    pub(crate) fn substitute(&self, name: &Name) -> Option<Name> {
        let keep = usize::from(name.num_labels().saturating_sub(self.owner_labels));
        let labels: Vec<&[u8]> = name.iter().take(keep).chain(self.target.iter()).collect();
        let wire_len: usize = labels.iter().map(|label| label.len() + 1).sum::<usize>() + 1;
        if wire_len > 255 {
            return None;
        }
        Name::from_labels(labels).ok()
    }

    /// The TTL of the synthesized CNAME: the DNAME's (RFC 6672 §3.1).
    pub(crate) fn ttl(&self) -> u32 {
        self.records
            .records()
            .first()
            .map_or(0, |record| record.ttl)
    }
}

impl Node {
    /// The record set of `rtype`, if present.
    pub(crate) fn rrset(&self, rtype: RecordType) -> Option<&RecordSet> {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, records)| records)
    }

    /// The DNAME at this name (whose name is `name`), if any.
    fn dname(&self, name: &LowerName) -> Option<Dname<'_>> {
        Some(Dname {
            records: self.rrset(RecordType::DNAME)?,
            owner_labels: name.num_labels(),
            target: self.dname_target.as_ref()?,
        })
    }

    /// The types of the record sets at this name.
    pub(crate) fn types(&self) -> impl Iterator<Item = RecordType> + '_ {
        self.rrsets.iter().map(|(rtype, _)| *rtype)
    }

    /// The first record set, for minimal answers to ANY (RFC 8482 §4.1).
    pub(crate) fn first_rrset(&self) -> Option<&RecordSet> {
        self.rrsets.first().map(|(_, records)| records)
    }

    /// The addresses for the additional section of an answer with `records` (a record set of
    /// this node): those of its NS, MX or SRV targets in this zone, if any.
    pub(crate) fn additional(&self, records: &RecordSet) -> Option<&RecordSet> {
        let rtype = records.records().first()?.record_type();
        self.additionals
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, records)| records)
    }
}

/// The name an NS, MX or SRV record points to, for additional section processing.
fn target(record: &Record) -> Option<&Name> {
    match &record.data {
        RData::NS(ns) => Some(&ns.0),
        RData::MX(mx) => Some(&mx.exchange),
        RData::SRV(srv) => Some(&srv.target),
        _ => None,
    }
}

/// The A and AAAA records at each of `targets` in `nodes`, in target order, without repeats.
fn addresses<'n>(
    nodes: &HashMap<LowerName, Node>,
    targets: impl Iterator<Item = &'n Name>,
    keep: impl Fn(&LowerName) -> bool,
) -> Vec<Record> {
    let mut seen: Vec<LowerName> = Vec::new();
    let mut records = Vec::new();
    for target in targets {
        let target = LowerName::new(target);
        if seen.contains(&target) || !keep(&target) {
            continue;
        }
        if let Some(node) = nodes.get(&target) {
            for rtype in [RecordType::A, RecordType::AAAA] {
                records.extend(
                    node.rrset(rtype)
                        .into_iter()
                        .flat_map(|set| set.records().iter().cloned()),
                );
            }
        }
        seen.push(target);
    }
    records
}

/// Gives every NS, MX and SRV record set outside the cuts the addresses of its targets that
/// the zone serves authoritatively (not below a cut: those are glue, sent with referrals only).
fn add_additionals(nodes: &mut HashMap<LowerName, Node>, origin: &LowerName, cuts: &[Cut]) {
    let authoritative =
        |name: &LowerName| origin.zone_of(name) && !cuts.iter().any(|cut| cut.name.zone_of(name));
    let mut found = Vec::new();
    for (name, node) in nodes.iter() {
        if !authoritative(name) {
            continue;
        }
        for (rtype, set) in &node.rrsets {
            if !matches!(*rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
                continue;
            }
            let records = addresses(
                nodes,
                set.records().iter().filter_map(target),
                authoritative,
            );
            if !records.is_empty() {
                found.push((name.clone(), *rtype, RecordSet::new(records)));
            }
        }
    }
    for (name, rtype, records) in found {
        if let Some(node) = nodes.get_mut(&name) {
            node.additionals.push((rtype, records));
        }
    }
}

impl Zone {
    /// Parses a master file for `origin` and marks the names of `services` (which must lie in
    /// this zone). `$INCLUDE`d files are read from disk, relative to `path`'s directory.
    ///
    /// # Errors
    ///
    /// Every problem found, each as `file:line: what is wrong` naming the offending text:
    /// syntax errors, records outside the zone, and the semantic checks in `checks.rs`.
    pub(crate) fn parse(
        origin: &str,
        text: &str,
        path: PathBuf,
        services: &[(ServiceId, &str)],
    ) -> Result<Zone, Vec<String>> {
        Zone::parse_with(
            origin,
            text.as_bytes(),
            &path,
            services,
            &mut |path: &Path| std::fs::read(path),
        )
    }

    /// [`Zone::parse`] with `include` reading the files `$INCLUDE` names.
    pub(crate) fn parse_with(
        origin: &str,
        text: &[u8],
        path: &Path,
        services: &[(ServiceId, &str)],
        include: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
    ) -> Result<Zone, Vec<String>> {
        let origin_name =
            Name::from_ascii(format!("{origin}.")).map_err(|e| vec![e.to_string()])?;
        let origin_lower = LowerName::new(&origin_name);
        let read = reader::read(text, path, &origin_name, include);
        let mut problems = read.problems;
        let mut drafts = Drafts::default();
        for parsed in read.records {
            let owner = LowerName::new(&parsed.owner);
            if !origin_lower.zone_of(&owner) {
                problems.push((
                    parsed.at,
                    format!(
                        "{} {} is outside the zone {origin_name}",
                        parsed.owner,
                        type_name(parsed.code)
                    ),
                ));
                continue;
            }
            match to_rdata(parsed.code, &parsed.wire) {
                Ok(rdata) => drafts.add(owner, parsed, rdata, &mut problems),
                Err(message) => problems.push((parsed.at, message)),
            }
        }
        let service_names: Vec<(ServiceId, LowerName)> = services
            .iter()
            .map(|&(id, name)| {
                let name = Name::from_ascii(format!("{name}.")).expect("validated");
                (id, LowerName::new(&name))
            })
            .collect();
        checks::check(&drafts, &origin_lower, &service_names, &mut problems);
        let mut nodes = drafts.into_nodes();
        let negative_soa = nodes
            .get(&origin_lower)
            .and_then(|n| n.rrset(RecordType::SOA))
            .and_then(|soa| negative_soa(&soa.records()[0]));
        let mut messages = Vec::new();
        for (id, name) in service_names {
            let node = nodes.entry(name.clone()).or_default();
            for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
                if node.rrset(rtype).is_some() {
                    messages.push(format!(
                        "{name} is a service: its {rtype} records come from routing, remove them from the zone file"
                    ));
                }
            }
            node.service = Some(id);
        }
        problems.sort_by(|(a, x), (b, y)| (&a.file, a.line, x).cmp(&(&b.file, b.line, y)));
        let n_problems = problems.len();
        messages.extend(
            problems
                .into_iter()
                .take(MAX_PROBLEMS)
                .map(|(at, message)| format!("{at}: {message}")),
        );
        if n_problems > MAX_PROBLEMS {
            messages.push(format!(
                "and {} more problems in this zone",
                n_problems - MAX_PROBLEMS
            ));
        }
        add_empty_non_terminals(&mut nodes, &origin_lower);
        let cuts = find_cuts(&nodes, &origin_lower);
        add_additionals(&mut nodes, &origin_lower, &cuts);
        match negative_soa {
            Some(soa) if messages.is_empty() => Ok(Zone {
                origin: origin_lower,
                negative_soa: RecordSet::new([soa]),
                nodes,
                cuts,
            }),
            _ => Err(messages),
        }
    }

    /// The parent side of the delegation point `name`, when `name` is one (and not below
    /// another): where its DS RRset lives, answered by the parent (RFC 4035 §3.1.4.1).
    pub(crate) fn delegation_node(&self, name: &LowerName) -> Option<&Node> {
        let cut = self.cuts.iter().find(|cut| cut.name.zone_of(name))?;
        if cut.name != *name {
            return None;
        }
        self.nodes.get(name)
    }

    /// Finds `name` (which must be inside this zone).
    pub(crate) fn lookup(&self, name: &LowerName) -> Lookup<'_> {
        // Delegations are rare and few; a linear scan beats a second map on every query.
        if let Some(cut) = self.cuts.iter().find(|cut| cut.name.zone_of(name)) {
            return Lookup::Referral(cut);
        }
        if let Some(node) = self.nodes.get(name) {
            return Lookup::Node(node);
        }
        // Only names that do not exist get here, so the walk (which allocates) is off the path
        // of every existing name. The closest encloser is the nearest existing ancestor (empty
        // non-terminals count: they are nodes); its `*` child, if any, is the source of synthesis.
        let mut child = name.clone();
        loop {
            let parent = child.base_name();
            if parent == self.origin || self.nodes.contains_key(&parent) {
                // The checks leave nothing below a DNAME, so a name below one always walks up
                // to it: the DNAME's owner is the closest encloser.
                if let Some(dname) = self.nodes.get(&parent).and_then(|node| node.dname(&parent)) {
                    return Lookup::Dname(dname);
                }
                return match self.nodes.get(&child.into_wildcard()) {
                    Some(node) => Lookup::Wildcard(node),
                    None => Lookup::NxDomain,
                };
            }
            if !self.origin.zone_of(&parent) {
                return Lookup::NxDomain;
            }
            child = parent;
        }
    }

    /// Every name of the zone with its node, empty non-terminals and names below
    /// delegations included (for the fast path's prepared answers).
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (&LowerName, &Node)> {
        self.nodes.iter()
    }

    /// The number of names with records, for logs.
    pub(crate) fn n_names(&self) -> usize {
        self.nodes.values().filter(|n| !n.rrsets.is_empty()).count()
    }
}

fn negative_soa(soa: &Record) -> Option<Record> {
    let RData::SOA(data) = &soa.data else {
        return None;
    };
    let mut record = soa.clone();
    record.ttl = soa.ttl.min(data.minimum);
    Some(record)
}

/// Adds a node for every ancestor of every name, up to the apex, so that they answer NODATA.
fn add_empty_non_terminals(nodes: &mut HashMap<LowerName, Node>, origin: &LowerName) {
    let names: Vec<LowerName> = nodes.keys().cloned().collect();
    for name in names {
        let mut parent = name.base_name();
        while origin.zone_of(&parent) && parent != *origin {
            nodes.entry(parent.clone()).or_default();
            parent = parent.base_name();
        }
    }
}

fn find_cuts(nodes: &HashMap<LowerName, Node>, origin: &LowerName) -> Vec<Cut> {
    let mut cuts: Vec<Cut> = nodes
        .iter()
        .filter(|(name, _)| *name != origin)
        .filter_map(|(name, node)| {
            let ns = node.rrset(RecordType::NS)?;
            let targets = || ns.records().iter().filter_map(target);
            let glue = addresses(nodes, targets(), |target| name.zone_of(target));
            let other_addresses = addresses(nodes, targets(), |target| {
                origin.zone_of(target) && !name.zone_of(target)
            });
            Some(Cut {
                name: name.clone(),
                ns: ns.clone(),
                glue: RecordSet::new(glue),
                other_addresses: RecordSet::new(other_addresses),
            })
        })
        .collect();
    // Nested cuts: the one nearest the apex wins, so test shorter names first.
    cuts.sort_by_key(|cut| cut.name.num_labels());
    cuts
}
