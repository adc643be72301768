//! Record data from master-file text to the octets sent on the wire, type by type, and from
//! those octets to hickory's `RData`.
//!
//! Every record is first encoded here, from its text, into the uncompressed wire form its RFC
//! defines: that is the single source of truth for what the server sends. hickory then decodes
//! those octets into its typed `RData` where it knows the type, so that name compression and
//! additional-section processing keep working; where hickory does not know the type, or would
//! not send back exactly the same octets, the record is kept as opaque data (RFC 3597 §3).
//!
//! Every type can be written in the generic form `\# <length> <hex>` (RFC 3597 §5); the types
//! in [`TYPES`] with a text syntax can also be written in it. DNSSEC signatures and denial
//! records are refused: meridian does not serve signed zones. This file knows nothing of
//! owners, TTLs or directives (`reader.rs`) or of how records fit together (`mod.rs`).

use std::net::{Ipv4Addr, Ipv6Addr};

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};

use super::lexer::{Token, escaped, show, unescape};

/// The type code of DNAME (RFC 6672), which hickory keeps as opaque data.
pub(super) const DNAME: u16 = 39;

/// How a type's data may be written.
#[derive(Clone, Copy)]
enum Syntax {
    /// Its own text form, read by this function (the generic form works too).
    Text(fn(&mut Fields<'_>, &mut Vec<u8>) -> Result<(), String>),
    /// Only the generic form `\# <length> <hex>`.
    Generic,
    /// Not accepted in a zone meridian serves, for this reason.
    Refused(&'static str),
}

/// A record type meridian knows by name.
struct Type {
    name: &'static str,
    code: u16,
    syntax: Syntax,
}

const UNSIGNED: &str = "meridian does not serve DNSSEC-signed zones; remove the signatures and denial records (DS, DNSKEY, CDS and CDNSKEY are fine)";
const META: &str = "it is a meta or question type, not data (RFC 6895 §3.1)";

/// Types by mnemonic. Types not listed can be written as `TYPE<number>` with the generic form.
const TYPES: &[Type] = &[
    t("A", 1, Syntax::Text(a)),
    t("NS", 2, Syntax::Text(name_only)),
    t("MD", 3, Syntax::Text(name_only)),
    t("MF", 4, Syntax::Text(name_only)),
    t("CNAME", 5, Syntax::Text(name_only)),
    t("SOA", 6, Syntax::Text(soa)),
    t("MB", 7, Syntax::Text(name_only)),
    t("MG", 8, Syntax::Text(name_only)),
    t("MR", 9, Syntax::Text(name_only)),
    t("NULL", 10, Syntax::Generic),
    t("WKS", 11, Syntax::Generic),
    t("PTR", 12, Syntax::Text(name_only)),
    t("HINFO", 13, Syntax::Text(hinfo)),
    t("MINFO", 14, Syntax::Text(two_names)),
    t("MX", 15, Syntax::Text(u16_name)),
    t("TXT", 16, Syntax::Text(txt)),
    t("RP", 17, Syntax::Text(two_names)),
    t("AFSDB", 18, Syntax::Text(u16_name)),
    t("RT", 21, Syntax::Text(u16_name)),
    t("SIG", 24, Syntax::Refused(UNSIGNED)),
    t("KEY", 25, Syntax::Generic),
    t("AAAA", 28, Syntax::Text(aaaa)),
    t("LOC", 29, Syntax::Text(loc)),
    t("NXT", 30, Syntax::Refused(UNSIGNED)),
    t("SRV", 33, Syntax::Text(srv)),
    t("NAPTR", 35, Syntax::Text(naptr)),
    t("KX", 36, Syntax::Text(u16_name)),
    t("CERT", 37, Syntax::Text(cert)),
    t("DNAME", DNAME, Syntax::Text(name_only)),
    t("OPT", 41, Syntax::Refused(META)),
    t("APL", 42, Syntax::Text(apl)),
    t("DS", 43, Syntax::Text(ds)),
    t("SSHFP", 44, Syntax::Text(sshfp)),
    t("RRSIG", 46, Syntax::Refused(UNSIGNED)),
    t("NSEC", 47, Syntax::Refused(UNSIGNED)),
    t("DNSKEY", 48, Syntax::Text(dnskey)),
    t("DHCID", 49, Syntax::Text(base64_only)),
    t("NSEC3", 50, Syntax::Refused(UNSIGNED)),
    t("NSEC3PARAM", 51, Syntax::Refused(UNSIGNED)),
    t("TLSA", 52, Syntax::Text(tlsa)),
    t("SMIMEA", 53, Syntax::Text(tlsa)),
    t("CDS", 59, Syntax::Text(ds)),
    t("CDNSKEY", 60, Syntax::Text(dnskey)),
    t("OPENPGPKEY", 61, Syntax::Text(base64_only)),
    t("CSYNC", 62, Syntax::Generic),
    t("ZONEMD", 63, Syntax::Text(zonemd)),
    t("SVCB", 64, Syntax::Text(svcb)),
    t("HTTPS", 65, Syntax::Text(svcb)),
    t("SPF", 99, Syntax::Text(txt)),
    t("EUI48", 108, Syntax::Text(eui48)),
    t("EUI64", 109, Syntax::Text(eui64)),
    t("TKEY", 249, Syntax::Refused(META)),
    t("TSIG", 250, Syntax::Refused(META)),
    t("IXFR", 251, Syntax::Refused(META)),
    t("AXFR", 252, Syntax::Refused(META)),
    t("MAILB", 253, Syntax::Refused(META)),
    t("MAILA", 254, Syntax::Refused(META)),
    t("ANY", 255, Syntax::Refused(META)),
    t("URI", 256, Syntax::Text(uri)),
    t("CAA", 257, Syntax::Text(caa)),
];

const fn t(name: &'static str, code: u16, syntax: Syntax) -> Type {
    Type { name, code, syntax }
}

/// The type code of a mnemonic (any case) or of `TYPE<number>` (RFC 3597 §5).
pub(super) fn type_code(text: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(known) = TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(text)) {
        return Some(known.code);
    }
    let number = text
        .get(..4)?
        .eq_ignore_ascii_case("TYPE")
        .then(|| &text[4..])?;
    decimal(number)
}

/// The mnemonic of a type code, or `TYPE<number>`.
pub(super) fn type_name(code: u16) -> String {
    TYPES
        .iter()
        .find(|t| t.code == code)
        .map_or_else(|| format!("TYPE{code}"), |t| t.name.to_owned())
}

/// The wire form of the record data written in `tokens`, for type `code`.
///
/// # Errors
///
/// What is wrong with the data, naming the offending text, and the line of the token where
/// it was found (`None` when the data is missing altogether).
pub(super) fn encode(
    code: u16,
    tokens: &[Token],
    origin: &Name,
) -> Result<Vec<u8>, (Option<u32>, String)> {
    let mut fields = Fields {
        tokens,
        next: 0,
        origin,
    };
    encode_fields(code, &mut fields).map_err(|message| {
        let token = tokens
            .get(fields.next.saturating_sub(1))
            .or_else(|| tokens.last());
        (token.map(|t| t.line), message)
    })
}

fn encode_fields(code: u16, fields: &mut Fields<'_>) -> Result<Vec<u8>, String> {
    let syntax = TYPES
        .iter()
        .find(|t| t.code == code)
        .map_or(Syntax::Generic, |t| t.syntax);
    if let Syntax::Refused(why) = syntax {
        return Err(format!(
            "{} records are not accepted: {why}",
            type_name(code)
        ));
    }
    if (128..=255).contains(&code) || code == 0 {
        return Err(format!(
            "{} records are not accepted: {META}",
            type_name(code)
        ));
    }
    let mut wire = Vec::new();
    match (syntax, fields.tokens.first()) {
        (_, Some(first)) if !first.quoted && first.text == br"\#" => {
            fields.next = 1;
            generic(fields, &mut wire)?;
        }
        (Syntax::Text(read), _) => read(fields, &mut wire)?,
        _ => {
            return Err(format!(
                "{} data must be written in the generic form `\\# <length> <hex>` (RFC 3597 §5)",
                type_name(code)
            ));
        }
    }
    if let Some(extra) = fields.tokens.get(fields.next) {
        fields.next += 1;
        return Err(format!(
            "unexpected \"{}\" after the record data",
            show(&extra.text)
        ));
    }
    if wire.len() > usize::from(u16::MAX) {
        return Err(format!(
            "the record data is {} octets, more than 65535",
            wire.len()
        ));
    }
    Ok(wire)
}

/// hickory's form of the data `wire` of type `code`: typed when hickory knows the type and
/// sends back exactly these octets, opaque otherwise.
///
/// # Errors
///
/// Data that is not valid for its type (only possible with the generic form).
pub(super) fn to_rdata(code: u16, wire: &[u8]) -> Result<RData, String> {
    let rtype = RecordType::from(code);
    let opaque = || RData::Unknown {
        code: rtype,
        rdata: if wire.is_empty() {
            NULL::new()
        } else {
            NULL::with(wire.to_vec())
        },
    };
    if code == DNAME {
        // RFC 6672 §2.1: the target is one uncompressed name that fills the data.
        return match name_at(wire, 0) {
            Some(end) if end == wire.len() && name_from_wire(wire).is_some() => Ok(opaque()),
            _ => Err("DNAME data is not one domain name".to_owned()),
        };
    }
    let length = u16::try_from(wire.len()).map_err(|_| "record data too long".to_owned())?;
    let mut decoder = BinDecoder::new(wire);
    let typed = match RData::read(&mut decoder, rtype, Restrict::new(length)) {
        Ok(RData::Unknown { .. }) => return Ok(opaque()),
        Ok(typed) => typed,
        // Types whose data we read from text ourselves are valid by construction; a decoding
        // failure there is hickory being stricter than the RFC, and the octets stand.
        Err(_) if !has_names(code) && !matches!(code, 1 | 28) => return Ok(opaque()),
        Err(error) => {
            return Err(format!(
                "the data is not valid {} data: {error}",
                type_name(code)
            ));
        }
    };
    let mut again = Vec::with_capacity(wire.len());
    let mut encoder = BinEncoder::new(&mut again);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    match typed.emit(&mut encoder) {
        Ok(()) if again == wire => Ok(typed),
        _ => Ok(opaque()),
    }
}

/// The target of DNAME data, and any other data holding just a name.
pub(super) fn name_from_wire(wire: &[u8]) -> Option<Name> {
    let mut decoder = BinDecoder::new(wire);
    let name = Name::read(&mut decoder).ok()?;
    decoder.is_empty().then_some(name)
}

/// Types whose data holds names that hickory reads: their data must decode.
fn has_names(code: u16) -> bool {
    matches!(code, 2 | 5 | 6 | 12 | 15 | 33)
}

/// The end of the uncompressed name starting at `at`, if there is one.
fn name_at(wire: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    loop {
        let len = usize::from(*wire.get(at)?);
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at - start > 255 || at > wire.len() {
            return None;
        }
        if len == 0 {
            return Some(at);
        }
    }
}

/// The labels of a domain name written in a master file: `@` is the origin, a name without a
/// final dot is relative to it, `\.` is a dot inside a label and `\DDD` an octet.
///
/// # Errors
///
/// An empty label, a label over 63 octets, a name over 255, a bad escape, a quoted name.
pub(super) fn labels(token: &Token, origin: &Name) -> Result<Vec<Vec<u8>>, String> {
    let text = &token.text;
    let bad = |why: &str| format!("\"{}\" is not a domain name: {why}", show(text));
    if token.quoted {
        return Err(bad("names are not quoted"));
    }
    if text.as_slice() == b"@" {
        return Ok(origin.iter().map(<[u8]>::to_vec).collect());
    }
    if text.as_slice() == b"." {
        return Ok(Vec::new());
    }
    let mut labels = Vec::new();
    let mut label = Vec::new();
    let mut absolute = false;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'.' => {
                if label.is_empty() {
                    return Err(bad("empty label"));
                }
                labels.push(std::mem::take(&mut label));
                if i + 1 == text.len() {
                    absolute = true;
                }
                i += 1;
            }
            b'\\' => {
                let (octet, len) = escaped(&text[i..]).map_err(|why| bad(&why))?;
                label.push(octet);
                i += len;
            }
            byte => {
                label.push(byte);
                i += 1;
            }
        }
    }
    if !label.is_empty() {
        labels.push(label);
    }
    if !absolute {
        labels.extend(origin.iter().map(<[u8]>::to_vec));
    }
    if let Some(long) = labels.iter().find(|l| l.len() > 63) {
        return Err(bad(&format!(
            "the label \"{}\" is {} octets, more than 63",
            show(long),
            long.len()
        )));
    }
    let wire_len: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if wire_len > 255 {
        return Err(bad(&format!(
            "{wire_len} octets on the wire, more than 255"
        )));
    }
    Ok(labels)
}

/// A name from labels that [`labels`] checked.
pub(super) fn to_name(labels: &[Vec<u8>]) -> Name {
    Name::from_labels(labels.iter().map(Vec::as_slice)).expect("labels checked by `labels`")
}

fn push_name(wire: &mut Vec<u8>, labels: &[Vec<u8>]) {
    for label in labels {
        wire.push(u8::try_from(label.len()).expect("labels are at most 63 octets"));
        wire.extend_from_slice(label);
    }
    wire.push(0);
}

/// The remaining fields of one record, read in order.
struct Fields<'a> {
    tokens: &'a [Token],
    next: usize,
    origin: &'a Name,
}

impl<'a> Fields<'a> {
    fn token(&mut self, what: &str) -> Result<&'a Token, String> {
        let token = self
            .tokens
            .get(self.next)
            .ok_or_else(|| format!("missing {what}"))?;
        self.next += 1;
        Ok(token)
    }

    /// An unquoted field's text (numbers, mnemonics, addresses).
    fn word(&mut self, what: &str) -> Result<&'a str, String> {
        let token = self.token(what)?;
        match std::str::from_utf8(&token.text) {
            Ok(text) if !token.quoted && !text.contains('\\') => Ok(text),
            _ => Err(format!("\"{}\" is not a valid {what}", show(&token.text))),
        }
    }

    fn rest(&mut self) -> &'a [Token] {
        let rest = &self.tokens[self.next.min(self.tokens.len())..];
        self.next = self.tokens.len();
        rest
    }

    fn is_done(&self) -> bool {
        self.next >= self.tokens.len()
    }

    fn number<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T, String> {
        let text = self.word(what)?;
        decimal::<u64>(text)
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("\"{text}\" is not a valid {what}"))
    }

    fn u8(&mut self, what: &str, wire: &mut Vec<u8>) -> Result<(), String> {
        wire.push(self.number::<u8>(what)?);
        Ok(())
    }

    fn u16(&mut self, what: &str, wire: &mut Vec<u8>) -> Result<(), String> {
        wire.extend_from_slice(&self.number::<u16>(what)?.to_be_bytes());
        Ok(())
    }

    fn name(&mut self, what: &str, wire: &mut Vec<u8>) -> Result<(), String> {
        let token = self.token(what)?;
        push_name(wire, &labels(token, self.origin)?);
        Ok(())
    }

    /// A `<character-string>` (RFC 1035 §3.3): a length octet and up to 255 octets.
    fn string(&mut self, what: &str, wire: &mut Vec<u8>) -> Result<(), String> {
        let token = self.token(what)?;
        let octets = unescape(&token.text)?;
        let len = u8::try_from(octets.len()).map_err(|_| {
            format!(
                "\"{}\" is {} octets, more than the 255 of a character string (split it into several strings)",
                show(&token.text),
                octets.len()
            )
        })?;
        wire.push(len);
        wire.extend_from_slice(&octets);
        Ok(())
    }

    /// The rest of the fields as one blob written in hex, spaces allowed.
    fn hex(&mut self, what: &str, wire: &mut Vec<u8>) -> Result<(), String> {
        let text = self.joined(what)?;
        let octets = HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .map_err(|_| format!("\"{text}\" is not valid hex for the {what}"))?;
        wire.extend_from_slice(&octets);
        Ok(())
    }

    /// The rest of the fields as one blob written in base64, spaces allowed.
    fn base64(&mut self, what: &str, wire: &mut Vec<u8>) -> Result<(), String> {
        let text = self.joined(what)?;
        let octets = BASE64
            .decode(text.as_bytes())
            .map_err(|_| format!("\"{text}\" is not valid base64 for the {what}"))?;
        wire.extend_from_slice(&octets);
        Ok(())
    }

    fn joined(&mut self, what: &str) -> Result<String, String> {
        let rest = self.rest();
        if rest.is_empty() {
            return Err(format!("missing {what}"));
        }
        let mut text = String::new();
        for token in rest {
            match std::str::from_utf8(&token.text) {
                Ok(part) if !token.quoted => text.push_str(part),
                _ => return Err(format!("\"{}\" is not a valid {what}", show(&token.text))),
            }
        }
        Ok(text)
    }

    /// A DNSSEC algorithm, by number or mnemonic (RFC 4034 Appendix A.1 and its registry).
    fn algorithm(&mut self, wire: &mut Vec<u8>) -> Result<(), String> {
        const ALGORITHMS: &[(&str, u8)] = &[
            ("RSAMD5", 1),
            ("DH", 2),
            ("DSA", 3),
            ("RSASHA1", 5),
            ("DSA-NSEC3-SHA1", 6),
            ("RSASHA1-NSEC3-SHA1", 7),
            ("RSASHA256", 8),
            ("RSASHA512", 10),
            ("ECC-GOST", 12),
            ("ECDSAP256SHA256", 13),
            ("ECDSAP384SHA384", 14),
            ("ED25519", 15),
            ("ED448", 16),
            ("INDIRECT", 252),
            ("PRIVATEDNS", 253),
            ("PRIVATEOID", 254),
        ];
        let text = self.word("algorithm")?;
        let number = ALGORITHMS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|&(_, number)| number)
            .or_else(|| decimal(text))
            .ok_or_else(|| format!("\"{text}\" is not a valid algorithm"))?;
        wire.push(number);
        Ok(())
    }
}

/// A decimal number with no sign, no spaces and no leading `+`.
fn decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `\# <length> <hex>` (RFC 3597 §5), after the `\#`.
fn generic(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    let length: u16 = fields.number("data length after \\#")?;
    if length == 0 {
        return if fields.is_done() {
            Ok(())
        } else {
            Err("\\# 0 takes no data".to_owned())
        };
    }
    fields.hex("generic data", wire)?;
    if wire.len() != usize::from(length) {
        return Err(format!(
            "\\# says {length} octets but the hex holds {}",
            wire.len()
        ));
    }
    Ok(())
}

fn a(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    let text = fields.word("IPv4 address")?;
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not an IPv4 address"))?;
    wire.extend_from_slice(&address.octets());
    Ok(())
}

fn aaaa(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    let text = fields.word("IPv6 address")?;
    let address: Ipv6Addr = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not an IPv6 address"))?;
    wire.extend_from_slice(&address.octets());
    Ok(())
}

fn name_only(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.name("target name", wire)
}

fn two_names(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.name("first name", wire)?;
    fields.name("second name", wire)
}

/// MX, AFSDB, RT, KX: a preference (or subtype) and a name.
fn u16_name(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u16("preference", wire)?;
    fields.name("target name", wire)
}

fn soa(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.name("primary server name", wire)?;
    fields.name("responsible mailbox", wire)?;
    let serial: u32 = fields.number("serial")?;
    wire.extend_from_slice(&serial.to_be_bytes());
    for what in ["refresh", "retry", "expire", "minimum"] {
        let text = fields.word(what)?;
        let seconds = ttl(text).map_err(|why| format!("{what}: {why}"))?;
        wire.extend_from_slice(&seconds.to_be_bytes());
    }
    Ok(())
}

/// A TTL or SOA timer: seconds, or BIND's units (`1w2d3h4m5s`), at most 2^31 - 1 (RFC 2181 §8).
pub(super) fn ttl(text: &str) -> Result<u32, String> {
    let bad = || format!("\"{text}\" is not a TTL (seconds, or units such as 1h30m)");
    if let Some(seconds) = decimal::<u64>(text) {
        return checked_ttl(seconds, text);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for byte in text.bytes() {
        if byte.is_ascii_digit() {
            let digit = u64::from(byte - b'0');
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(digit))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let unit = match byte.to_ascii_lowercase() {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(bad)?;
    }
    if number.is_some() {
        return Err(bad());
    }
    checked_ttl(total, text)
}

fn checked_ttl(seconds: u64, text: &str) -> Result<u32, String> {
    u32::try_from(seconds)
        .ok()
        .filter(|&s| s <= i32::MAX as u32)
        .ok_or_else(|| format!("\"{text}\" is more than 2147483647 seconds (RFC 2181 §8)"))
}

fn txt(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.string("text", wire)?;
    while !fields.is_done() {
        fields.string("text", wire)?;
    }
    Ok(())
}

fn hinfo(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.string("CPU", wire)?;
    fields.string("OS", wire)
}

fn srv(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u16("priority", wire)?;
    fields.u16("weight", wire)?;
    fields.u16("port", wire)?;
    fields.name("target name", wire)
}

fn naptr(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u16("order", wire)?;
    fields.u16("preference", wire)?;
    fields.string("flags", wire)?;
    fields.string("services", wire)?;
    fields.string("regexp", wire)?;
    fields.name("replacement", wire)
}

/// RFC 4398 §2.2: the type by number or mnemonic, key tag, algorithm, base64 certificate.
fn cert(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    const CERT_TYPES: &[(&str, u16)] = &[
        ("PKIX", 1),
        ("SPKI", 2),
        ("PGP", 3),
        ("IPKIX", 4),
        ("ISPKI", 5),
        ("IPGP", 6),
        ("ACPKIX", 7),
        ("IACPKIX", 8),
        ("URI", 253),
        ("OID", 254),
    ];
    let text = fields.word("certificate type")?;
    let cert_type = CERT_TYPES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, n)| n)
        .or_else(|| decimal(text))
        .ok_or_else(|| format!("\"{text}\" is not a valid certificate type"))?;
    wire.extend_from_slice(&cert_type.to_be_bytes());
    fields.u16("key tag", wire)?;
    fields.algorithm(wire)?;
    fields.base64("certificate", wire)
}

/// RFC 4034 §5.3 (and RFC 8078 for CDS): key tag, algorithm, digest type, hex digest.
fn ds(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u16("key tag", wire)?;
    fields.algorithm(wire)?;
    fields.u8("digest type", wire)?;
    fields.hex("digest", wire)
}

/// RFC 4034 §2.2 (and RFC 8078 for CDNSKEY): flags, protocol, algorithm, base64 key.
fn dnskey(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u16("flags", wire)?;
    fields.u8("protocol", wire)?;
    fields.algorithm(wire)?;
    fields.base64("public key", wire)
}

fn base64_only(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.base64("data", wire)
}

/// RFC 4255 §3.2: algorithm, fingerprint type, hex fingerprint.
fn sshfp(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u8("algorithm", wire)?;
    fields.u8("fingerprint type", wire)?;
    fields.hex("fingerprint", wire)
}

/// RFC 6698 §2.2 (TLSA) and RFC 8162 (SMIMEA): usage, selector, matching type, hex data.
fn tlsa(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u8("certificate usage", wire)?;
    fields.u8("selector", wire)?;
    fields.u8("matching type", wire)?;
    fields.hex("certificate association data", wire)
}

/// RFC 8976 §2.3: serial, scheme, hash algorithm, hex digest.
fn zonemd(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    let serial: u32 = fields.number("serial")?;
    wire.extend_from_slice(&serial.to_be_bytes());
    fields.u8("scheme", wire)?;
    fields.u8("hash algorithm", wire)?;
    fields.hex("digest", wire)
}

fn eui48(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    eui(fields, wire, 6)
}

fn eui64(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    eui(fields, wire, 8)
}

/// RFC 7043 §3.2 and §4.2: hex octets joined by hyphens.
fn eui(fields: &mut Fields<'_>, wire: &mut Vec<u8>, n_octets: usize) -> Result<(), String> {
    let text = fields.word("address")?;
    let octets: Option<Vec<u8>> = text
        .split('-')
        .map(|part| {
            (part.len() == 2)
                .then(|| u8::from_str_radix(part, 16).ok())
                .flatten()
        })
        .collect();
    match octets {
        Some(octets) if octets.len() == n_octets => {
            wire.extend_from_slice(&octets);
            Ok(())
        }
        _ => Err(format!(
            "\"{text}\" is not {n_octets} hex octets joined by hyphens"
        )),
    }
}

/// RFC 9460 §2.1: priority, target and `key=value` parameters, sent sorted by key.
fn svcb(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    let priority: u16 = fields.number("priority")?;
    wire.extend_from_slice(&priority.to_be_bytes());
    fields.name("target name", wire)?;
    let mut params: Vec<(u16, Vec<u8>)> = Vec::new();
    while !fields.is_done() {
        let token = fields.token("parameter")?;
        if token.quoted {
            return Err(format!(
                "\"{}\" is not a key=value parameter",
                show(&token.text)
            ));
        }
        let text = String::from_utf8_lossy(&token.text).into_owned();
        let (key, value) = match text.split_once('=') {
            // `alpn="h2,h3"`: the lexer ends a word at a quote, so the value is the next token.
            Some((key, "")) => {
                let value = fields.token("parameter value")?;
                (key.to_owned(), Some(value.text.clone()))
            }
            Some((key, value)) => (key.to_owned(), Some(value.as_bytes().to_vec())),
            None => (text.clone(), None),
        };
        let code = svc_key(&key)?;
        if params.iter().any(|(c, _)| *c == code) {
            return Err(format!(
                "the parameter \"{key}\" is given twice (RFC 9460 §2.2)"
            ));
        }
        params.push((code, svc_value(code, &key, value.as_deref())?));
    }
    if priority == 0 && !params.is_empty() {
        return Err("alias mode (priority 0) takes no parameters (RFC 9460 §2.4.2)".to_owned());
    }
    params.sort_by_key(|(code, _)| *code);
    for (code, value) in params {
        let len =
            u16::try_from(value.len()).map_err(|_| "a parameter value is too long".to_owned())?;
        wire.extend_from_slice(&code.to_be_bytes());
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(&value);
    }
    Ok(())
}

/// The SvcParamKeys of RFC 9460 §14.3.2 (and its registry), and `key<number>`.
const SVC_KEYS: &[(&str, u16)] = &[
    ("mandatory", 0),
    ("alpn", 1),
    ("no-default-alpn", 2),
    ("port", 3),
    ("ipv4hint", 4),
    ("ech", 5),
    ("ipv6hint", 6),
    ("dohpath", 7),
    ("ohttp", 8),
];

fn svc_key(key: &str) -> Result<u16, String> {
    SVC_KEYS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|&(_, code)| code)
        .or_else(|| key.strip_prefix("key").and_then(decimal))
        .filter(|&code| code != 65535)
        .ok_or_else(|| format!("\"{key}\" is not a service parameter key (RFC 9460 §2.1)"))
}

/// A parameter's value in wire form (RFC 9460 §7 and Appendix A).
fn svc_value(code: u16, key: &str, value: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let bad = |why: &str| format!("{key}: {why}");
    let flag = matches!(code, 2 | 8);
    let value = match value {
        None if flag => return Ok(Vec::new()),
        None => return Err(bad("needs a value")),
        Some(_) if flag => return Err(bad("takes no value")),
        Some(value) => value,
    };
    let items = || -> Result<Vec<Vec<u8>>, String> { Ok(value_list(&unescape(value)?)) };
    let mut wire = Vec::new();
    match code {
        0 => {
            let mut keys = Vec::new();
            for item in items()? {
                keys.push(svc_key(&String::from_utf8_lossy(&item))?);
            }
            keys.sort_unstable();
            if keys.windows(2).any(|pair| pair[0] == pair[1]) || keys.contains(&0) {
                return Err(bad("lists a key twice, or itself"));
            }
            keys.iter()
                .for_each(|k| wire.extend_from_slice(&k.to_be_bytes()));
        }
        1 => {
            for item in items()? {
                let len = u8::try_from(item.len())
                    .ok()
                    .filter(|&len| len > 0)
                    .ok_or_else(|| bad("an ALPN id is 1 to 255 octets"))?;
                wire.push(len);
                wire.extend_from_slice(&item);
            }
        }
        3 => {
            let port: u16 = decimal(&String::from_utf8_lossy(&unescape(value)?))
                .ok_or_else(|| bad("not a port number"))?;
            wire.extend_from_slice(&port.to_be_bytes());
        }
        4 | 6 => {
            for item in items()? {
                let text = String::from_utf8_lossy(&item);
                match (code, text.parse::<Ipv4Addr>(), text.parse::<Ipv6Addr>()) {
                    (4, Ok(v4), _) => wire.extend_from_slice(&v4.octets()),
                    (6, _, Ok(v6)) => wire.extend_from_slice(&v6.octets()),
                    _ => return Err(bad(&format!("\"{text}\" is not an address of its family"))),
                }
            }
        }
        5 => {
            wire = BASE64
                .decode(&unescape(value)?)
                .map_err(|_| bad("not valid base64"))?;
        }
        _ => wire = unescape(value)?,
    }
    Ok(wire)
}

/// A comma-separated value list (RFC 9460 Appendix A.1), after the character-string escapes
/// are decoded: `\,` is a comma inside an item and `\\` a backslash.
fn value_list(value: &[u8]) -> Vec<Vec<u8>> {
    let mut items = vec![Vec::new()];
    let mut bytes = value.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b',' => items.push(Vec::new()),
            b'\\' => {
                if let Some(&escaped) = bytes.next() {
                    items.last_mut().expect("never empty").push(escaped);
                }
            }
            byte => items.last_mut().expect("never empty").push(byte),
        }
    }
    items
}

/// RFC 7553 §4.5: priority, weight and the target URI as one quoted string, which fills the
/// rest of the data (it has no length octet and may exceed 255 octets).
fn uri(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u16("priority", wire)?;
    fields.u16("weight", wire)?;
    let token = fields.token("target URI")?;
    if !token.quoted {
        return Err(format!(
            "the URI target \"{}\" must be a quoted string (RFC 7553 §4.5)",
            show(&token.text)
        ));
    }
    let target = unescape(&token.text)?;
    if target.is_empty() {
        return Err("the URI target is empty".to_owned());
    }
    wire.extend_from_slice(&target);
    Ok(())
}

/// RFC 8659 §4.1.1: flags, a tag of letters and digits, and a value that fills the rest.
fn caa(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    fields.u8("flags", wire)?;
    let tag = fields.word("tag")?;
    if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "\"{tag}\" is not a CAA tag (1 to 15 letters and digits, RFC 8659 §4.1)"
        ));
    }
    wire.push(u8::try_from(tag.len()).expect("at most 15"));
    wire.extend_from_slice(tag.as_bytes());
    let value = fields.token("value")?;
    wire.extend_from_slice(&unescape(&value.text)?);
    Ok(())
}

/// RFC 3123 §4: items `[!]afi:address/prefix`, none or many.
fn apl(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    for token in fields.rest() {
        let text = std::str::from_utf8(&token.text).unwrap_or("");
        let bad = || {
            format!(
                "\"{}\" is not an APL item ([!]1:IPv4/prefix or [!]2:IPv6/prefix)",
                show(&token.text)
            )
        };
        let (negated, item) = match text.strip_prefix('!') {
            Some(item) => (true, item),
            None => (false, text),
        };
        let (family, rest) = item.split_once(':').ok_or_else(bad)?;
        let (address, prefix) = rest.split_once('/').ok_or_else(bad)?;
        let prefix: u8 = decimal(prefix).ok_or_else(bad)?;
        let (family, octets, max): (u16, Vec<u8>, u8) = match family {
            "1" => (
                1,
                address
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad())?
                    .octets()
                    .to_vec(),
                32,
            ),
            "2" => (
                2,
                address
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad())?
                    .octets()
                    .to_vec(),
                128,
            ),
            _ => return Err(bad()),
        };
        if token.quoted || prefix > max {
            return Err(bad());
        }
        // RFC 3123 §4: trailing zero octets of the address are not sent.
        let len = octets.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        wire.extend_from_slice(&family.to_be_bytes());
        wire.push(prefix);
        wire.push(u8::from(negated) << 7 | u8::try_from(len).expect("at most 16"));
        wire.extend_from_slice(&octets[..len]);
    }
    Ok(())
}

/// RFC 1876 §3: `d [m [s]] N|S d [m [s]] E|W alt[m] [size[m] [hp[m] [vp[m]]]]`.
fn loc(fields: &mut Fields<'_>, wire: &mut Vec<u8>) -> Result<(), String> {
    let latitude = angle(fields, ("N", "S"), 90)?;
    let longitude = angle(fields, ("E", "W"), 180)?;
    let altitude = meters(fields.word("altitude")?, "altitude")?;
    if !(-10_000_000..=4_284_967_295).contains(&altitude) {
        return Err("the altitude is outside -100000m to 42849672.95m".to_owned());
    }
    // Defaults (RFC 1876 §3): size 1m, horizontal precision 10000m, vertical 10m.
    let mut precisions = [100_i64, 1_000_000, 1_000];
    for (i, what) in ["size", "horizontal precision", "vertical precision"]
        .into_iter()
        .enumerate()
    {
        if fields.is_done() {
            break;
        }
        precisions[i] = meters(fields.word(what)?, what)?;
        if !(0..=9_000_000_000).contains(&precisions[i]) {
            return Err(format!("the {what} is outside 0m to 90000000m"));
        }
    }
    wire.push(0);
    wire.extend(precisions.map(precision));
    wire.extend_from_slice(&latitude.to_be_bytes());
    wire.extend_from_slice(&longitude.to_be_bytes());
    let altitude = u32::try_from(altitude + 10_000_000).expect("range checked");
    wire.extend_from_slice(&altitude.to_be_bytes());
    Ok(())
}

/// Degrees, optional minutes and seconds, and a hemisphere, as thousandths of a second of arc
/// offset by 2^31 (RFC 1876 §2).
fn angle(fields: &mut Fields<'_>, hemispheres: (&str, &str), max: i64) -> Result<u32, String> {
    let mut parts = Vec::new();
    let negative = loop {
        let text = fields.word("coordinate")?;
        if text.eq_ignore_ascii_case(hemispheres.0) {
            break false;
        }
        if text.eq_ignore_ascii_case(hemispheres.1) {
            break true;
        }
        if parts.len() == 3 {
            return Err(format!(
                "\"{text}\" where {} or {} was expected",
                hemispheres.0, hemispheres.1
            ));
        }
        parts.push(text);
    };
    let bad = || format!("\"{}\" is not a LOC coordinate", parts.join(" "));
    let degrees: i64 = parts.first().and_then(|d| decimal(d)).ok_or_else(bad)?;
    let minutes: i64 = match parts.get(1) {
        Some(m) => decimal(m).filter(|&m| m < 60).ok_or_else(bad)?,
        None => 0,
    };
    let milliseconds = match parts.get(2) {
        Some(s) => fixed(s, 3).filter(|&s| s < 60_000).ok_or_else(bad)?,
        None => 0,
    };
    let value = ((degrees * 60 + minutes) * 60) * 1000 + milliseconds;
    if value > max * 3_600_000 {
        return Err(bad());
    }
    let offset = if negative { -value } else { value };
    u32::try_from((1_i64 << 31) + offset).map_err(|_| bad())
}

/// A length in meters with an optional `m`, as centimeters.
fn meters(text: &str, what: &str) -> Result<i64, String> {
    let number = text.strip_suffix(['m', 'M']).unwrap_or(text);
    let (negative, number) = match number.strip_prefix('-') {
        Some(number) => (true, number),
        None => (false, number),
    };
    let cm = fixed(number, 2).ok_or_else(|| format!("\"{text}\" is not a valid {what}"))?;
    Ok(if negative { -cm } else { cm })
}

/// A decimal with up to `places` fractional digits, scaled by 10^places.
fn fixed(text: &str, places: u32) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > places as usize
        || (!fraction.is_empty() && decimal::<u64>(fraction).is_none())
    {
        return None;
    }
    let whole: i64 = decimal(whole)?;
    let scale = 10_i64.pow(places);
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        decimal::<i64>(fraction)? * 10_i64.pow(places - fraction.len() as u32)
    };
    whole.checked_mul(scale)?.checked_add(fraction)
}

/// RFC 1876 §2: a size in centimeters as a mantissa and a power of ten, four bits each.
fn precision(cm: i64) -> u8 {
    let mut mantissa = cm;
    let mut exponent = 0_u8;
    while mantissa > 9 {
        mantissa /= 10;
        exponent += 1;
    }
    u8::try_from(mantissa).expect("a single digit") << 4 | exponent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::lexer::Lexer;

    /// The wire form of `rdata` written for `rtype` in a zone for example.com.
    fn wire(rtype: &str, rdata: &str) -> Result<Vec<u8>, String> {
        let text = format!("x {rtype} {rdata}\n");
        let mut lexer = Lexer::new(text.as_bytes());
        let entry = lexer.next_entry().expect("one entry").expect("lexes");
        let code = type_code(rtype.as_bytes()).expect("known type");
        let origin = Name::from_ascii("example.com.").unwrap();
        encode(code, &entry.tokens[2..], &origin).map_err(|(_, message)| message)
    }

    fn ok(rtype: &str, rdata: &str) -> Vec<u8> {
        wire(rtype, rdata).unwrap_or_else(|e| panic!("{rtype} {rdata}: {e}"))
    }

    /// `example.com.` in wire form.
    const EXAMPLE: &[u8] = b"\x07example\x03com\x00";

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn character_strings_take_decimal_escapes_as_octets() {
        assert_eq!(ok("TXT", r#""\010""#), [1, 10]);
        assert_eq!(ok("TXT", r#""a\065b""#), b"\x03aAb");
        assert_eq!(ok("TXT", r"abc\032def"), b"\x07abc def");
        assert_eq!(ok("TXT", r#""a\"b" "\\" """#), b"\x03a\"b\x01\\\x00");
        assert_eq!(ok("SPF", r#""v=spf1 -all""#), b"\x0bv=spf1 -all");
        assert_eq!(ok("HINFO", r#""\255x" os"#), b"\x02\xffx\x02os");
        let long = "x".repeat(256);
        assert!(
            wire("TXT", &long)
                .unwrap_err()
                .contains("more than the 255")
        );
        assert_eq!(
            wire("TXT", r#""\300""#).unwrap_err(),
            "\"\\300\" is not an octet: \\DDD is a decimal value from 000 to 255"
        );
    }

    #[test]
    fn names_take_escapes_and_origin() {
        assert_eq!(ok("CNAME", "@"), EXAMPLE);
        assert_eq!(ok("CNAME", "a"), cat(&[b"\x01a", EXAMPLE]));
        assert_eq!(ok("CNAME", "a\\065b.org."), b"\x03aAb\x03org\x00");
        assert_eq!(ok("CNAME", r"a\.b\032c\\d."), b"\x07a.b c\\d\x00");
        assert_eq!(ok("CNAME", r"\000."), b"\x01\x00\x00");
        assert_eq!(ok("CNAME", "."), b"\x00");
        assert!(wire("CNAME", "a..b.").unwrap_err().contains("empty label"));
        assert!(
            wire("CNAME", &format!("{}.", "x".repeat(64)))
                .unwrap_err()
                .contains("more than 63")
        );
        assert!(
            wire("CNAME", "\"a.b.\"")
                .unwrap_err()
                .contains("not quoted")
        );
    }

    #[test]
    fn structured_types() {
        assert_eq!(ok("A", "192.0.2.1"), [192, 0, 2, 1]);
        assert!(wire("A", "192.0.2").is_err());
        assert_eq!(ok("MX", "10 mail"), cat(&[b"\x00\x0a\x04mail", EXAMPLE]));
        assert_eq!(
            ok("SOA", "ns hm 1 1h 2m 3d 4w"),
            cat(&[
                b"\x02ns",
                EXAMPLE,
                b"\x02hm",
                EXAMPLE,
                &1_u32.to_be_bytes(),
                &3600_u32.to_be_bytes(),
                &120_u32.to_be_bytes(),
                &259_200_u32.to_be_bytes(),
                &2_419_200_u32.to_be_bytes(),
            ])
        );
        assert_eq!(
            ok("SRV", "1 2 443 t."),
            b"\x00\x01\x00\x02\x01\xbb\x01t\x00"
        );
        assert_eq!(
            ok("NAPTR", r#"1 2 "U" "E2U+sip" "!^.*$!sip:a\064b!" ."#),
            cat(&[b"\x00\x01\x00\x02\x01U\x07E2U+sip\x0e!^.*$!sip:a@b!\x00"])
        );
        assert_eq!(
            ok("CAA", r#"0 issue "ca.example\059 x""#),
            b"\x00\x05issueca.example; x"
        );
        assert_eq!(
            ok("DS", "12345 ECDSAP256SHA256 2 ab CD"),
            b"\x30\x39\x0d\x02\xab\xcd"
        );
        assert_eq!(
            ok("DNSKEY", "257 3 13 AQID BA=="),
            b"\x01\x01\x03\x0d\x01\x02\x03\x04"
        );
        assert_eq!(ok("SSHFP", "4 2 00ff"), b"\x04\x02\x00\xff");
        assert_eq!(ok("TLSA", "3 1 1 0a"), b"\x03\x01\x01\x0a");
        assert_eq!(
            ok("URI", r#"10 1 "https://example.com/""#),
            b"\x00\x0a\x00\x01https://example.com/"
        );
        assert!(
            wire("URI", "10 1 https://x/")
                .unwrap_err()
                .contains("quoted")
        );
        assert_eq!(ok("RP", "mbox ."), cat(&[b"\x04mbox", EXAMPLE, b"\x00"]));
        assert_eq!(ok("DNAME", "example.net."), b"\x07example\x03net\x00");
        assert_eq!(
            ok("EUI48", "00-00-5e-00-53-2a"),
            b"\x00\x00\x5e\x00\x53\x2a"
        );
        assert_eq!(
            ok("APL", "1:192.168.32.0/21 !1:192.168.38.0/28 2:2001:db8::/32"),
            b"\x00\x01\x15\x03\xc0\xa8\x20\x00\x01\x1c\x83\xc0\xa8\x26\x00\x02\x20\x04\x20\x01\x0d\xb8"
        );
        assert_eq!(ok("APL", ""), b"");
    }

    #[test]
    fn service_bindings_follow_rfc_9460() {
        // RFC 9460 Appendix D.1 and D.2's test vectors.
        assert_eq!(
            ok("SVCB", "0 foo.example.com."),
            b"\x00\x00\x03foo\x07example\x03com\x00"
        );
        assert_eq!(ok("SVCB", "1 ."), b"\x00\x01\x00");
        assert_eq!(
            ok("SVCB", "16 foo.example.com. port=53"),
            b"\x00\x10\x03foo\x07example\x03com\x00\x00\x03\x00\x02\x00\x35"
        );
        assert_eq!(
            ok("SVCB", "1 foo.example.com. key667=hello"),
            b"\x00\x01\x03foo\x07example\x03com\x00\x02\x9b\x00\x05hello"
        );
        assert_eq!(
            ok("SVCB", r#"1 foo.example.com. key667="hello\210qoo""#),
            b"\x00\x01\x03foo\x07example\x03com\x00\x02\x9b\x00\x09hello\xd2qoo"
        );
        assert_eq!(
            ok(
                "SVCB",
                r#"1 foo.example.com. ipv6hint="2001:db8::1,2001:db8::53:1""#
            ),
            [
                &b"\x00\x01\x03foo\x07example\x03com\x00\x00\x06\x00\x20"[..],
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                &[
                    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53, 0, 1
                ],
            ]
            .concat()
        );
        assert_eq!(
            ok(
                "SVCB",
                r#"16 foo.example.org. alpn=h2,h3-19 mandatory=ipv4hint,alpn ipv4hint=192.0.2.1"#
            ),
            [
                &b"\x00\x10\x03foo\x07example\x03org\x00"[..],
                b"\x00\x00\x00\x04\x00\x01\x00\x04",
                b"\x00\x01\x00\x09\x02h2\x05h3-19",
                b"\x00\x04\x00\x04\xc0\x00\x02\x01",
            ]
            .concat()
        );
        assert_eq!(
            ok("HTTPS", r#"16 foo.example.org. alpn="f\\\\oo\\,bar,h2""#),
            [
                &b"\x00\x10\x03foo\x07example\x03org\x00"[..],
                b"\x00\x01\x00\x0c\x08f\\oo,bar\x02h2",
            ]
            .concat()
        );
        assert!(
            wire("SVCB", "1 foo.example.com. port=53 port=54")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            wire("SVCB", "0 foo.example.com. port=53")
                .unwrap_err()
                .contains("alias mode")
        );
        assert!(wire("SVCB", "1 foo.example.com. mandatory=mandatory").is_err());
        assert!(
            wire("HTTPS", "1 . bogus=1")
                .unwrap_err()
                .contains("not a service parameter key")
        );
    }

    #[test]
    fn loc_follows_rfc_1876() {
        // RFC 1876 §4's example, checked against its published encoding.
        assert_eq!(
            ok("LOC", "42 21 54 N 71 06 18 W -24m 30m"),
            [
                0x00, 0x33, 0x16, 0x13, 0x89, 0x17, 0x2d, 0xd0, 0x70, 0xbe, 0x15, 0xf0, 0x00, 0x98,
                0x8d, 0x20
            ]
        );
        assert_eq!(
            ok(
                "LOC",
                "52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m"
            ),
            [
                0x00, 0x00, 0x16, 0x13, 0x8b, 0x3c, 0xf0, 0x18, 0x81, 0x0c, 0xbc, 0xe0, 0x00, 0x98,
                0x95, 0xb8
            ]
        );
        assert!(wire("LOC", "91 N 0 E 0").is_err());
        assert!(wire("LOC", "1 2 3 4 N 0 E 0").is_err());
    }

    #[test]
    fn generic_form_for_every_type() {
        assert_eq!(ok("TYPE65534", r"\# 3 010203"), [1, 2, 3]);
        assert_eq!(ok("TYPE65534", r"\# 3 01 02 03"), [1, 2, 3]);
        assert_eq!(ok("TYPE65534", r"\# 0"), b"");
        assert_eq!(ok("A", r"\# 4 C0000201"), [192, 0, 2, 1]);
        assert_eq!(
            wire("TYPE65534", r"\# 2 010203").unwrap_err(),
            "\\# says 2 octets but the hex holds 3"
        );
        assert!(
            wire("TYPE65534", "010203")
                .unwrap_err()
                .contains("generic form")
        );
        assert!(wire("RRSIG", r"\# 1 00").unwrap_err().contains("signed"));
        assert!(wire("TYPE255", r"\# 1 00").unwrap_err().contains("meta"));
        assert_eq!(type_code(b"type65534"), Some(65534));
        assert_eq!(type_code(b"TYPE65536"), None);
        assert_eq!(type_code(b"dname"), Some(39));
    }

    #[test]
    fn typed_where_hickory_sends_the_same_octets() {
        let typed = to_rdata(15, &ok("MX", "10 mail")).unwrap();
        assert!(matches!(typed, RData::MX(_)));
        let generic = to_rdata(65534, &[1, 2, 3]).unwrap();
        assert!(matches!(generic, RData::Unknown { .. }));
        let txt = to_rdata(16, &ok("TXT", r#""\010""#)).unwrap();
        let mut bytes = Vec::new();
        txt.emit(&mut BinEncoder::new(&mut bytes)).unwrap();
        assert_eq!(bytes, [1, 10]);
        assert!(
            to_rdata(1, &[1, 2, 3]).is_err(),
            "an A record is four octets"
        );
        assert!(to_rdata(DNAME, &[3, b'a']).is_err());
        assert_eq!(
            name_from_wire(&ok("DNAME", "a\\.b."))
                .unwrap()
                .iter()
                .next(),
            Some(&b"a.b"[..])
        );
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl("3600"), Ok(3600));
        assert_eq!(ttl("1h30m"), Ok(5400));
        assert_eq!(ttl("1W"), Ok(604_800));
        assert_eq!(ttl("2147483647"), Ok(2_147_483_647));
        assert!(ttl("2147483648").is_err());
        assert!(ttl("1h30").is_err());
        assert!(ttl("h").is_err());
        assert!(ttl("-1").is_err());
    }
}
