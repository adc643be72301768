//! Prepared answers: the part of a reply after its question, encoded once when a snapshot is
//! built, by the general path's own encoder.
//!
//! A [`Prepared`] holds the header bits the answer sets (AA, RCODE), its section counts and
//! the bytes of its answer, authority and additional sections. It is made by encoding the
//! general path's reply to a query whose question has the same length as the ones it will
//! answer: hickory never compresses a record's name against the question (the question is
//! copied as received, and registered as one compression candidate that includes its type and
//! class, which no name matches), so the bytes do not depend on the question's case. Pointers
//! between the records do depend on where the records start; an answer that serves questions
//! of any length (NXDOMAIN below a name) records where its pointers are, found by encoding it
//! at three offsets and comparing, and the fast path moves them by the question's length.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::rr::LowerName;
use hickory_proto::serialize::binary::BinEncodable;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use super::super::answer::Reply;
use super::super::respond::encode_plain;
use super::super::rrl::ResponseClass;
use super::parse::HEADER_LEN;

/// The records of one answer on the wire, ready to follow a question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Prepared {
    /// AA.
    pub(crate) authoritative: bool,
    /// RCODE (its low four bits: a prepared answer never needs the OPT's extended RCODE).
    pub(crate) rcode: u8,
    /// Answer, authority and additional records.
    pub(crate) counts: [u16; 3],
    /// Where the question ended when `bytes` were encoded.
    base: usize,
    /// The sections.
    bytes: Box<[u8]>,
    /// Offsets in `bytes` of compression pointers to move by the question's length.
    pointers: Box<[u16]>,
    /// Whether `pointers` were found, so that the answer may follow questions of any length.
    movable: bool,
}

impl Prepared {
    /// The answer to `question` (a name in lowercase wire form, type and class IN): `reply` as
    /// the general path encodes it, for questions of this length only. `None` when hickory
    /// cannot encode it whole.
    pub(crate) fn encode(question: &[u8], reply: Reply<'_>) -> Option<Prepared> {
        let (base, bytes, header) = encode_after(question, reply)?;
        Some(Prepared {
            authoritative: header[2] & 0x04 != 0,
            rcode: header[3] & 0x0F,
            counts: [count(&header, 6), count(&header, 8), count(&header, 10)],
            base,
            bytes: bytes.into(),
            pointers: Box::new([]),
            movable: false,
        })
    }

    /// As [`Prepared::encode`], for an answer that follows questions of any length: `questions`
    /// are three of different lengths with the same answer (`reply` for each), so that the
    /// pointers can be found and checked. `None` also when they cannot be told apart.
    pub(crate) fn encode_movable<'a>(
        questions: [&[u8]; 3],
        reply: impl Fn() -> Reply<'a>,
    ) -> Option<Prepared> {
        let first = Prepared::encode(questions[0], reply())?;
        let (second_base, second, _) = encode_after(questions[1], reply())?;
        let (third_base, third, _) = encode_after(questions[2], reply())?;
        let pointers = find_pointers(&first.bytes, &second, second_base.checked_sub(first.base)?)?;
        let prepared = Prepared {
            pointers: pointers.into(),
            movable: true,
            ..first
        };
        // The pointers found from two encodings must predict the third.
        let mut moved = Vec::new();
        prepared.write_sections(&mut moved, third_base);
        (moved == third).then_some(prepared)
    }

    /// Appends the sections to `out`, whose question ended at `base`; `false` (nothing
    /// appended) when this answer cannot follow a question ending there.
    pub(crate) fn write_sections(&self, out: &mut Vec<u8>, base: usize) -> bool {
        if base != self.base && !self.movable {
            return false;
        }
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if base != self.base {
            let delta = base.wrapping_sub(self.base);
            for &at in self.pointers.iter() {
                let at = start + usize::from(at);
                let pointer = u16::from_be_bytes([out[at], out[at + 1]]) & 0x3FFF;
                let moved = usize::from(pointer).wrapping_add(delta);
                if moved >= 0x3FFF {
                    out.truncate(start);
                    return false;
                }
                out[at..at + 2].copy_from_slice(&(0xC000 | moved as u16).to_be_bytes());
            }
        }
        true
    }

    /// The reply's class for response rate limiting, as `wire.rs` judges the general path's.
    pub(crate) fn class(&self) -> ResponseClass {
        match self.rcode {
            0 if self.counts[0] > 0 => ResponseClass::Positive,
            0 if !self.authoritative => ResponseClass::Referral,
            0 => ResponseClass::NoData,
            3 => ResponseClass::NxDomain,
            _ => ResponseClass::Error,
        }
    }
}

/// The question for `name` and `qtype`, class IN, as a query carries it.
pub(crate) fn question(name: &LowerName, qtype: u16) -> Option<Vec<u8>> {
    let mut bytes = name.to_bytes().ok()?;
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&1u16.to_be_bytes());
    Some(bytes)
}

/// Encodes `reply` to a query of `question` as the general path does; where the question ends,
/// the bytes after it and the header.
fn encode_after(question: &[u8], reply: Reply<'_>) -> Option<(usize, Vec<u8>, [u8; HEADER_LEN])> {
    // A query with this one question, as a client would send it.
    let mut query = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(question);
    let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
    let request = Request::from_bytes(query, src, Protocol::Udp).ok()?;
    let bytes = encode_plain(&request, reply)?;
    let base = HEADER_LEN + question.len();
    let header: [u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    // TC: hickory cut the reply short; such an answer is not prepared.
    if header[2] & 0x02 != 0 || bytes.get(HEADER_LEN..base)? != question {
        return None;
    }
    Some((base, bytes[base..].to_vec(), header))
}

fn count(header: &[u8; HEADER_LEN], at: usize) -> u16 {
    u16::from_be_bytes([header[at], header[at + 1]])
}

/// The offsets of the compression pointers in `first` that are `delta` larger in `second`:
/// every difference between the two must be such a pointer.
fn find_pointers(first: &[u8], second: &[u8], delta: usize) -> Option<Vec<u16>> {
    if first.len() != second.len() {
        return None;
    }
    let mut pointers = Vec::new();
    let mut at = 0;
    while at < first.len() {
        if first[at] == second[at] {
            at += 1;
            continue;
        }
        // The difference is in the pointer's first byte (a carry) or its second.
        let start = [at.checked_sub(1), Some(at)]
            .into_iter()
            .flatten()
            .find(|&start| is_moved_pointer(first, second, start, delta))?;
        pointers.push(u16::try_from(start).ok()?);
        at = start + 2;
    }
    Some(pointers)
}

fn is_moved_pointer(first: &[u8], second: &[u8], at: usize, delta: usize) -> bool {
    let (Some(a), Some(b)) = (first.get(at..at + 2), second.get(at..at + 2)) else {
        return false;
    };
    let (a, b) = (
        u16::from_be_bytes([a[0], a[1]]),
        u16::from_be_bytes([b[0], b[1]]),
    );
    a & 0xC000 == 0xC000
        && b & 0xC000 == 0xC000
        && usize::from(a & 0x3FFF) + delta == usize::from(b & 0x3FFF)
}
