//! EDNS(0) on the way in and out: the client's address from EDNS Client Subnet, NSID, and the
//! OPT record of the response.

use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption, NSIDPayload};

use crate::geo::embedded_ipv4;

/// The address routing locates, and how much of it the asker let us see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr {
    /// The address to locate: the ECS address, else the resolver's; an IPv6 address carrying
    /// an IPv4 one (mapped, compatible, 6to4) becomes that IPv4 address.
    pub(crate) ip: IpAddr,
    /// How many leading bits of `ip` are meaningful, in `ip`'s own family.
    pub(crate) source_prefix: u8,
    /// The ECS option of the query, echoed in the response with our scope (RFC 7871 §7.2.1).
    pub(crate) ecs: Option<ClientSubnet>,
}

/// The ECS option breaks RFC 7871 §6: the answer is FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MalformedEcs;

impl ClientAddr {
    /// Works out whom a query is for.
    ///
    /// An ECS option with a source prefix of 0 asks us not to tailor the answer to the client
    /// (RFC 7871 §7.1.2): we locate the resolver instead and answer with scope 0.
    ///
    /// # Errors
    ///
    /// [`MalformedEcs`] when the ECS address has bits set past its source prefix.
    pub(crate) fn from_query(edns: Option<&Edns>, resolver: IpAddr) -> Result<Self, MalformedEcs> {
        let ecs = match edns.and_then(|e| e.option(EdnsCode::Subnet)) {
            Some(EdnsOption::Subnet(ecs)) => Some(*ecs),
            _ => None,
        };
        ClientAddr::from_subnet(ecs, resolver)
    }

    /// As [`ClientAddr::from_query`], from the query's ECS option alone.
    ///
    /// # Errors
    ///
    /// [`MalformedEcs`] when the ECS address has bits set past its source prefix.
    pub(crate) fn from_subnet(
        ecs: Option<ClientSubnet>,
        resolver: IpAddr,
    ) -> Result<Self, MalformedEcs> {
        let (ip, _) = located_as(resolver, full_prefix(resolver));
        let resolver = ClientAddr {
            ip,
            source_prefix: full_prefix(ip),
            ecs: None,
        };
        let Some(ecs) = ecs else {
            return Ok(resolver);
        };
        let (addr, source) = (ecs.addr(), ecs.source_prefix());
        if masked(addr, source) != addr {
            return Err(MalformedEcs);
        }
        if source == 0 {
            return Ok(ClientAddr {
                ecs: Some(ecs),
                ..resolver
            });
        }
        let (ip, at) = located_as(addr, source);
        let source_prefix = match ip {
            // An IPv4 address carried in an IPv6 option: its bits start at `at`.
            IpAddr::V4(_) => source.min(at + 32).saturating_sub(at),
            IpAddr::V6(_) => source,
        };
        Ok(ClientAddr {
            ip,
            source_prefix,
            ecs: Some(ecs),
        })
    }

    /// Converts a scope computed in `ip`'s family into the family of the ECS option.
    ///
    /// The scope may be longer than the source prefix: where the geo database splits the
    /// source network, the answer holds only for the part holding the (zero-filled) address,
    /// and RFC 7871 §7.2.1 has us say so, so that resolvers do not cache it for the rest.
    pub(crate) fn reply_scope(&self, scope: u8) -> u8 {
        let Some(ecs) = &self.ecs else { return 0 };
        if ecs.source_prefix() == 0 {
            return 0;
        }
        let (_, at) = located_as(ecs.addr(), ecs.source_prefix());
        scope + at
    }
}

/// The address routing locates for `addr`/`prefix`, and the bit of `addr` where it starts:
/// an IPv6 network that lies wholly in IPv4-mapped, IPv4-compatible or 6to4 space is located
/// by the IPv4 address it carries (see [`embedded_ipv4`]); anything else is itself, at bit 0.
fn located_as(addr: IpAddr, prefix: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some((v4, at)) if prefix >= at => (IpAddr::V4(v4), at),
            _ => (addr, 0),
        },
        IpAddr::V4(_) => (addr, 0),
    }
}

/// The OPT record of a response to a query that carried `request`.
///
/// Our payload size is the smaller of the requester's (at least 512, RFC 6891 §6.2.5) and
/// `max_udp_payload`: hickory truncates UDP responses at the payload size of the response's OPT.
pub(crate) fn response_opt(
    request: &Edns,
    max_udp_payload: u16,
    ecs: Option<ClientSubnet>,
    nsid: Option<&[u8]>,
) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().max(512).min(max_udp_payload));
    edns.set_version(0);
    // RFC 3225 §3: the DO bit is copied into the response.
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    if let Some(ecs) = ecs {
        edns.options_mut().insert(EdnsOption::Subnet(ecs));
    }
    // RFC 5001 §2.1: the NSID option is answered only when the query asked for it.
    if let Some(identity) = nsid
        && request.option(EdnsCode::NSID).is_some()
        && let Ok(payload) = NSIDPayload::new(identity)
    {
        edns.options_mut().insert(EdnsOption::NSID(payload));
    }
    edns
}

/// Writes the NSID payload (RFC 5001) of an instance named `identity` serving the fleet's state
/// `revision` into `out`: the identity, then ` rev ` and the revision in decimal when there is one
/// (the etcd backend; with the embedded store the revision is 0 and the payload is the identity
/// alone). The general path and the fast path both write it through here, from the same
/// snapshot, so their bytes agree while the revision changes under them. Allocates nothing
/// beyond what `out` must grow by.
pub(crate) fn write_nsid(identity: &[u8], revision: i64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.extend_from_slice(identity);
    if revision > 0 {
        // Writing to a `Vec` cannot fail.
        let _ = write!(out, " rev {revision}");
    }
}

/// The size of `edns` as an OPT record on the wire (RFC 6891 §6.1.2): root name, type, class,
/// TTL and length (11 bytes), then each option's code, length and data.
pub(crate) fn opt_wire_len(edns: &Edns) -> usize {
    11 + edns
        .options()
        .as_ref()
        .iter()
        .map(|(_, option)| 4 + usize::from(option.len()))
        .sum::<usize>()
}

/// Whether the OPT record of `message` (a whole query) holds an ECS option whose address field
/// is longer than its source prefix needs: FORMERR (RFC 7871 §6, "ADDRESS ... MUST NOT contain
/// any more octets than needed"). hickory-proto reads the octets the prefix needs and drops the
/// rest, so this reads the message's own bytes; anything it cannot walk is left to the decoder.
pub(crate) fn ecs_address_overlong(message: &[u8]) -> bool {
    /// ECS's option code (RFC 7871 §6).
    const ECS: u16 = 8;
    let u16_at = |at: usize| {
        message
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    // Past a (possibly compressed) name starting at `at`.
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *message.get(at)?;
            match len {
                0 => return Some(at + 1),
                l if l & 0xc0 == 0xc0 => return Some(at + 2),
                l if l & 0xc0 == 0 => at += 1 + usize::from(l),
                _ => return None,
            }
        }
    };
    let walk = || -> Option<bool> {
        let (questions, records) = (u16_at(4)?, u16_at(6)? + u16_at(8)? + u16_at(10)?);
        let mut at = 12;
        for _ in 0..questions {
            at = skip_name(at)? + 4;
        }
        for _ in 0..records {
            at = skip_name(at)?;
            let (rtype, rdlen) = (u16_at(at)?, u16_at(at + 8)?);
            let data = message.get(at + 10..at + 10 + rdlen)?;
            at += 10 + rdlen;
            if rtype != usize::from(u16::from(RecordType::OPT)) {
                continue;
            }
            let mut option = data;
            while let [c0, c1, l0, l1, rest @ ..] = option {
                let (code, len) = (
                    u16::from_be_bytes([*c0, *c1]),
                    usize::from(u16::from_be_bytes([*l0, *l1])),
                );
                let value = rest.get(..len)?;
                if code == ECS
                    && let [_, _, source, _, address @ ..] = value
                    && address.len() > usize::from(source.div_ceil(8))
                {
                    return Some(true);
                }
                option = &rest[len..];
            }
        }
        Some(false)
    };
    walk().unwrap_or(false)
}

fn full_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` with the bits past `prefix` cleared.
pub(crate) fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = v4.to_bits();
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_edns(ecs: ClientSubnet) -> Edns {
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Subnet(ecs));
        edns
    }

    #[test]
    fn client_address_comes_from_ecs_else_resolver() {
        let resolver: IpAddr = "192.0.2.53".parse().unwrap();
        let plain = ClientAddr::from_query(None, resolver).unwrap();
        assert_eq!((plain.ip, plain.source_prefix), (resolver, 32));
        assert_eq!(plain.reply_scope(24), 0, "no ECS, nothing to echo");

        let mapped = ClientAddr::from_query(None, "::ffff:192.0.2.53".parse().unwrap()).unwrap();
        assert_eq!(mapped.ip, resolver);

        let ecs = ClientSubnet::new("81.2.69.0".parse().unwrap(), 24, 0);
        let client = ClientAddr::from_query(Some(&query_edns(ecs)), resolver).unwrap();
        assert_eq!(client.ip, "81.2.69.0".parse::<IpAddr>().unwrap());
        assert_eq!(client.reply_scope(16), 16);
        assert_eq!(
            client.reply_scope(28),
            28,
            "longer than the source where the database splits it (RFC 7871 §7.2.1)"
        );

        let zero = ClientSubnet::new("0.0.0.0".parse().unwrap(), 0, 0);
        let client = ClientAddr::from_query(Some(&query_edns(zero)), resolver).unwrap();
        assert_eq!(client.ip, resolver, "source /0: locate the resolver");
        assert_eq!(client.reply_scope(24), 0);

        let v4_in_v6 = ClientSubnet::new("::ffff:81.2.69.0".parse().unwrap(), 120, 0);
        let client = ClientAddr::from_query(Some(&query_edns(v4_in_v6)), resolver).unwrap();
        assert_eq!(client.ip, "81.2.69.0".parse::<IpAddr>().unwrap());
        assert_eq!(client.source_prefix, 24);
        assert_eq!(
            client.reply_scope(16),
            112,
            "scope in the option's own family"
        );
    }

    #[test]
    fn six_to_four_and_ipv4_compatible_clients_are_located_by_their_ipv4_address() {
        let resolver: IpAddr = "2002:c000:235::53".parse().unwrap();
        let plain = ClientAddr::from_query(None, resolver).unwrap();
        assert_eq!(
            (plain.ip, plain.source_prefix),
            ("192.0.2.53".parse().unwrap(), 32)
        );

        let six_to_four = ClientSubnet::new("2002:5102:4500::".parse().unwrap(), 40, 0);
        let client = ClientAddr::from_query(Some(&query_edns(six_to_four)), resolver).unwrap();
        assert_eq!(client.ip, "81.2.69.0".parse::<IpAddr>().unwrap());
        assert_eq!(client.source_prefix, 24);
        assert_eq!(
            client.reply_scope(14),
            30,
            "bit 16 onwards carries the IPv4 address"
        );

        let site = ClientSubnet::new("2002:5102:45a0:1::".parse().unwrap(), 64, 0);
        let client = ClientAddr::from_query(Some(&query_edns(site)), resolver).unwrap();
        assert_eq!(
            (client.ip, client.source_prefix),
            ("81.2.69.160".parse().unwrap(), 32)
        );
        assert_eq!(client.reply_scope(32), 48);

        let compatible = ClientSubnet::new("::81.2.69.0".parse().unwrap(), 120, 0);
        let client = ClientAddr::from_query(Some(&query_edns(compatible)), resolver).unwrap();
        assert_eq!(
            (client.ip, client.source_prefix),
            ("81.2.69.0".parse().unwrap(), 24)
        );
        assert_eq!(client.reply_scope(16), 112);

        let wider = ClientSubnet::new("::".parse().unwrap(), 64, 0);
        let client = ClientAddr::from_query(Some(&query_edns(wider)), resolver).unwrap();
        assert_eq!(
            (client.ip, client.reply_scope(3)),
            ("::".parse().unwrap(), 3),
            "a network wider than ::/96 is not IPv4"
        );

        let native = ClientSubnet::new("2001:db8::".parse().unwrap(), 48, 0);
        let client = ClientAddr::from_query(Some(&query_edns(native)), resolver).unwrap();
        assert_eq!(
            (client.ip, client.reply_scope(32)),
            ("2001:db8::".parse().unwrap(), 32)
        );
    }

    #[test]
    fn host_bits_past_the_source_prefix_are_malformed() {
        let resolver: IpAddr = "192.0.2.53".parse().unwrap();
        let ecs = ClientSubnet::new("81.2.69.7".parse().unwrap(), 24, 0);
        assert_eq!(
            ClientAddr::from_query(Some(&query_edns(ecs)), resolver),
            Err(MalformedEcs)
        );
    }

    /// A query for `a.` with an OPT record holding `options`.
    fn query_with_options(options: &[u8]) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        message.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        message.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        message.extend_from_slice(&u16::try_from(options.len()).unwrap().to_be_bytes());
        message.extend_from_slice(options);
        message
    }

    #[test]
    fn ecs_addresses_longer_than_their_prefix_are_found() {
        // family 1, source /24, scope 0, then the address octets.
        let ecs = |address: &[u8]| {
            let mut option = vec![
                0,
                8,
                0,
                u8::try_from(4 + address.len()).unwrap(),
                0,
                1,
                24,
                0,
            ];
            option.extend_from_slice(address);
            option
        };
        assert!(!ecs_address_overlong(&query_with_options(&ecs(&[
            81, 2, 69
        ]))));
        assert!(ecs_address_overlong(&query_with_options(&ecs(&[
            81, 2, 69, 0
        ]))));
        // After another option (NSID, empty), and never for other options or short messages.
        let mut both = vec![0, 3, 0, 0];
        both.extend(ecs(&[81, 2, 69, 0]));
        assert!(ecs_address_overlong(&query_with_options(&both)));
        assert!(!ecs_address_overlong(&query_with_options(&[
            0, 3, 0, 4, 1, 2, 3, 4
        ])));
        assert!(!ecs_address_overlong(&query_with_options(&[])));
        assert!(!ecs_address_overlong(&[0; 11]));
        let cut = query_with_options(&ecs(&[81, 2, 69, 0]));
        assert!(
            !ecs_address_overlong(&cut[..cut.len() - 1]),
            "left to the decoder"
        );
    }

    #[test]
    fn response_opt_caps_payload_and_answers_nsid_only_when_asked() {
        let mut request = Edns::new();
        request.set_max_payload(4096);
        let opt = response_opt(&request, 1232, None, Some(b"ns1"));
        assert_eq!(opt.max_payload(), 1232);
        assert!(opt.option(EdnsCode::NSID).is_none());
        request.set_max_payload(100);
        request
            .options_mut()
            .insert(EdnsOption::NSID(NSIDPayload::new(Vec::new()).unwrap()));
        let opt = response_opt(&request, 1232, None, Some(b"ns1"));
        assert_eq!(opt.max_payload(), 512);
        assert!(
            matches!(opt.option(EdnsCode::NSID), Some(EdnsOption::NSID(p)) if p.as_ref() == b"ns1")
        );
    }

    #[test]
    fn the_nsid_payload_carries_the_revision_when_there_is_one() {
        for (revision, expected) in [(0, &b"ns1"[..]), (-1, b"ns1"), (42, b"ns1 rev 42")] {
            let mut out = b"xx".to_vec();
            write_nsid(b"ns1", revision, &mut out);
            assert_eq!(&out[2..], expected, "revision {revision}");
        }
    }
}
