//! The fast path's minimal parser: it recognises the shapes most queries take and nothing else.
//!
//! A query it accepts has a header with QR clear, opcode QUERY, one question and no answer or
//! authority records; the question's name written out in labels (no compression pointer), class
//! IN; and at most one additional record, an EDNS(0) OPT owned by the root whose options are
//! only EDNS Client Subnet (well formed: a known family, the address exactly as long as its
//! source prefix needs, no bits set past it), an empty NSID request and DNS cookies, each at
//! most once. The message ends right there.
//!
//! Everything else (another opcode, EDNS version, option or record, a pointer in the question,
//! trailing bytes, any malformation) is `None`: the general path answers it, with whatever error
//! the protocol asks for. The parser never allocates: the lowercased name goes into a buffer the
//! caller owns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::edns::masked;

/// Header length (RFC 1035 §4.1.1).
pub(super) const HEADER_LEN: usize = 12;
/// The longest name on the wire (RFC 1035 §2.3.4).
pub(super) const MAX_NAME_LEN: usize = 255;

/// The OPT record's type (RFC 6891 §6.1.1).
const TYPE_OPT: u16 = 41;
/// Class IN.
const CLASS_IN: u16 = 1;
/// EDNS option codes we recognise (IANA "DNS EDNS0 Option Codes").
const OPTION_NSID: u16 = 3;
const OPTION_ECS: u16 = 8;
const OPTION_COOKIE: u16 = 10;

/// A query of a recognised shape, borrowing the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query<'q> {
    /// The question as received (name, type and class), echoed in the reply with its case.
    pub(crate) question: &'q [u8],
    /// The name's wire length, final zero included.
    pub(crate) name_len: usize,
    /// The question's type.
    pub(crate) qtype: u16,
    /// RD (RFC 1035 §4.1.1), copied into the reply.
    pub(crate) recursion_desired: bool,
    /// CD (RFC 4035 §3.2.2), copied into the reply.
    pub(crate) checking_disabled: bool,
    /// The OPT record, when there is one.
    pub(crate) edns: Option<Edns>,
}

/// What the fast path needs of a query's OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The requester's UDP payload size, as sent.
    pub(crate) max_payload: u16,
    /// DO (RFC 3225), copied into the reply.
    pub(crate) dnssec_ok: bool,
    /// The EDNS Client Subnet option.
    pub(crate) ecs: Option<Ecs>,
    /// Whether the query asked for the server's NSID (RFC 5001).
    pub(crate) nsid: bool,
}

/// A well-formed EDNS Client Subnet option (RFC 7871 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ecs {
    /// The address, zero past the source prefix.
    pub(crate) addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub(crate) source_prefix: u8,
}

/// Parses `bytes`, writing the question's name lowercased into `lower` (its length is the
/// name's wire length). `None`: not a shape the fast path answers.
pub(crate) fn parse<'q>(bytes: &'q [u8], lower: &mut [u8; MAX_NAME_LEN]) -> Option<Query<'q>> {
    let header = bytes.get(..HEADER_LEN)?;
    // QR clear and opcode QUERY (RFC 1035 §4.1.1): the high five bits of the third byte.
    if header[2] & 0xF8 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (n_questions, n_answers, n_authorities, n_additionals) =
        (count(4), count(6), count(8), count(10));
    if n_questions != 1 || n_answers != 0 || n_authorities != 0 || n_additionals > 1 {
        return None;
    }
    let name_len = read_name(&bytes[HEADER_LEN..], lower)?;
    let question_end = HEADER_LEN + name_len + 4;
    let question = bytes.get(HEADER_LEN..question_end)?;
    let qtype = u16::from_be_bytes([question[name_len], question[name_len + 1]]);
    let qclass = u16::from_be_bytes([question[name_len + 2], question[name_len + 3]]);
    if qclass != CLASS_IN {
        return None;
    }
    let rest = &bytes[question_end..];
    let edns = match n_additionals {
        0 if rest.is_empty() => None,
        1 => Some(read_opt(rest)?),
        _ => return None,
    };
    Some(Query {
        question,
        name_len,
        qtype,
        recursion_desired: header[2] & 0x01 != 0,
        checking_disabled: header[3] & 0x10 != 0,
        edns,
    })
}

/// Reads an uncompressed name at the start of `bytes` into `lower`, lowercased; its wire length.
fn read_name(bytes: &[u8], lower: &mut [u8; MAX_NAME_LEN]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*bytes.get(at)?);
        if len == 0 {
            *lower.get_mut(at)? = 0;
            return Some(at + 1);
        }
        // A pointer (0xC0) or a reserved label type (0x40, 0x80; RFC 6891 §5): not ours.
        if len > 63 {
            return None;
        }
        // The label and the final zero must still fit in 255 octets.
        if at + 1 + len + 1 > MAX_NAME_LEN {
            return None;
        }
        let label = bytes.get(at + 1..at + 1 + len)?;
        lower[at] = len as u8;
        for (out, byte) in lower[at + 1..at + 1 + len].iter_mut().zip(label) {
            *out = byte.to_ascii_lowercase();
        }
        at += 1 + len;
    }
}

/// Reads the OPT record that must make up all of `bytes`.
fn read_opt(bytes: &[u8]) -> Option<Edns> {
    // Root owner, type, class (the payload size), TTL (extended RCODE, version, flags), length.
    let fixed = bytes.get(..11)?;
    if fixed[0] != 0 || u16::from_be_bytes([fixed[1], fixed[2]]) != TYPE_OPT {
        return None;
    }
    // RFC 6891 §6.1.3: version 0 only; the general path answers BADVERS.
    if fixed[6] != 0 {
        return None;
    }
    let rdata_len = usize::from(u16::from_be_bytes([fixed[9], fixed[10]]));
    let mut options = &bytes[11..];
    if options.len() != rdata_len {
        return None;
    }
    let mut edns = Edns {
        max_payload: u16::from_be_bytes([fixed[3], fixed[4]]),
        dnssec_ok: fixed[7] & 0x80 != 0,
        ecs: None,
        nsid: false,
    };
    let mut cookie = false;
    while !options.is_empty() {
        let head = options.get(..4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = options.get(4..4 + len)?;
        options = &options[4 + len..];
        match code {
            OPTION_ECS if edns.ecs.is_none() => edns.ecs = Some(read_ecs(data)?),
            // RFC 5001 §2.1: a request carries an empty NSID option.
            OPTION_NSID if !edns.nsid && data.is_empty() => edns.nsid = true,
            // Cookies (RFC 7873) are not answered (the general path ignores them too), only
            // tolerated: a client cookie of 8 octets, perhaps with a server cookie of 8 to 32.
            OPTION_COOKIE if !cookie && (len == 8 || (16..=40).contains(&len)) => cookie = true,
            _ => return None,
        }
    }
    Some(edns)
}

/// Reads an ECS option's data: family, source and scope prefix, address.
fn read_ecs(data: &[u8]) -> Option<Ecs> {
    let head = data.get(..4)?;
    let family = u16::from_be_bytes([head[0], head[1]]);
    let source_prefix = head[2];
    let address = &data[4..];
    // RFC 7871 §6: the address has exactly as many octets as the source prefix needs.
    if address.len() != usize::from(source_prefix).div_ceil(8) {
        return None;
    }
    let addr = match family {
        1 if source_prefix <= 32 => {
            let mut octets = [0; 4];
            octets[..address.len()].copy_from_slice(address);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        2 if source_prefix <= 128 => {
            let mut octets = [0; 16];
            octets[..address.len()].copy_from_slice(address);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    // Bits set past the source prefix: FORMERR, from the general path (RFC 7871 §7.2.1).
    if masked(addr, source_prefix) != addr {
        return None;
    }
    Some(Ecs {
        addr,
        source_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, additional: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x12, 0x34, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0];
        bytes.push(u8::from(!additional.is_empty()));
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&qtype.to_be_bytes());
        bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        bytes.extend_from_slice(additional);
        bytes
    }

    fn opt(options: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0];
        bytes.extend_from_slice(&(options.len() as u16).to_be_bytes());
        bytes.extend_from_slice(options);
        bytes
    }

    const NAME: &[u8] = b"\x03WwW\x07example\x04test\x00";

    #[test]
    fn recognises_a_plain_query_and_lowercases_its_name() {
        let bytes = query(NAME, 1, &[]);
        let mut lower = [0; MAX_NAME_LEN];
        let parsed = parse(&bytes, &mut lower).unwrap();
        assert_eq!(&lower[..parsed.name_len], b"\x03www\x07example\x04test\x00");
        assert_eq!(parsed.question, &bytes[12..]);
        assert_eq!(parsed.qtype, 1);
        assert!(parsed.recursion_desired && parsed.checking_disabled);
        assert_eq!(parsed.edns, None);
    }

    #[test]
    fn reads_ecs_nsid_cookie_and_do() {
        let mut options = vec![0, 8, 0, 7, 0, 1, 24, 0, 81, 2, 69];
        options.extend_from_slice(&[0, 3, 0, 0]);
        options.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let bytes = query(NAME, 28, &opt(&options));
        let mut lower = [0; MAX_NAME_LEN];
        let edns = parse(&bytes, &mut lower).unwrap().edns.unwrap();
        assert_eq!(edns.max_payload, 1232);
        assert!(edns.dnssec_ok && edns.nsid);
        assert_eq!(
            edns.ecs,
            Some(Ecs {
                addr: "81.2.69.0".parse().unwrap(),
                source_prefix: 24
            })
        );
    }

    #[test]
    fn leaves_every_other_shape_to_the_general_path() {
        let mut lower = [0; MAX_NAME_LEN];
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let plain = query(NAME, 1, &[]);
        let mut response = plain.clone();
        response[2] |= 0x80;
        cases.push(("a response", response));
        let mut notify = plain.clone();
        notify[2] |= 4 << 3;
        cases.push(("opcode NOTIFY", notify));
        let mut two = plain.clone();
        two[5] = 2;
        cases.push(("two questions", two));
        let mut chaos = plain.clone();
        let at = chaos.len() - 1;
        chaos[at] = 3;
        cases.push(("class CH", chaos));
        cases.push(("a pointer", query(b"\x03www\xc0\x0c", 1, &[])));
        let mut trailing = plain.clone();
        trailing.push(0);
        cases.push(("trailing bytes", trailing));
        cases.push(("truncated", plain[..plain.len() - 1].to_vec()));
        let mut version = opt(&[]);
        version[6] = 1;
        cases.push(("EDNS version 1", query(NAME, 1, &version)));
        cases.push((
            "ECS host bits past the prefix",
            query(NAME, 1, &opt(&[0, 8, 0, 7, 0, 1, 23, 0, 81, 2, 69])),
        ));
        cases.push((
            "ECS address too long",
            query(NAME, 1, &opt(&[0, 8, 0, 8, 0, 1, 24, 0, 81, 2, 69, 0])),
        ));
        cases.push((
            "ECS family 3",
            query(NAME, 1, &opt(&[0, 8, 0, 4, 0, 3, 0, 0])),
        ));
        cases.push(("an NSID with data", query(NAME, 1, &opt(&[0, 3, 0, 1, 9]))));
        cases.push(("an unknown option", query(NAME, 1, &opt(&[0, 12, 0, 0]))));
        cases.push((
            "two ECS options",
            query(
                NAME,
                1,
                &opt(&[0, 8, 0, 4, 0, 1, 0, 0, 0, 8, 0, 4, 0, 1, 0, 0]),
            ),
        ));
        for (what, bytes) in cases {
            assert_eq!(parse(&bytes, &mut lower), None, "{what}");
        }
    }
}
