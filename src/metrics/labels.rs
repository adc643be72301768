//! The bounded label vocabularies: query types, response codes and directory lookup outcomes,
//! each an enum with its label text (a datacenter's state is `routing::DcStatus`, shared with the
//! HTTP API).
//!
//! Callers convert into these at their boundary (`dns` from hickory's codes, `state` from its
//! own types), so no label value ever comes from a client.

/// Where a directory lookup's placement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupSource {
    /// The user's hash bucket.
    Bucket,
    /// A per-user pin.
    Pin,
}

/// Why a directory lookup chose its serving datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupReason {
    /// The home datacenter is eligible.
    Home,
    /// The home is not; the replica is.
    Replica,
    /// Neither is; the home serves anyway.
    Fallback,
}

/// The query types we count separately; everything else is [`QueryType::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// IPv4 address (1).
    A,
    /// IPv6 address (28).
    Aaaa,
    /// Any type (255, RFC 8482 answers it minimally).
    Any,
    /// Canonical name (5).
    Cname,
    /// Mail exchange (15).
    Mx,
    /// Name server (2).
    Ns,
    /// Start of authority (6).
    Soa,
    /// Text (16).
    Txt,
    /// Service locator (33).
    Srv,
    /// Certification authority authorization (257).
    Caa,
    /// Domain name pointer (12).
    Ptr,
    /// Any other type code; one label so that clients cannot grow the label set.
    Other,
}

impl QueryType {
    /// Every query type, in label-array order.
    pub const ALL: [QueryType; 12] = [
        QueryType::A,
        QueryType::Aaaa,
        QueryType::Any,
        QueryType::Cname,
        QueryType::Mx,
        QueryType::Ns,
        QueryType::Soa,
        QueryType::Txt,
        QueryType::Srv,
        QueryType::Caa,
        QueryType::Ptr,
        QueryType::Other,
    ];

    /// The query type for a numeric DNS TYPE code (RFC 1035 §3.2.2 and later registrations).
    pub fn from_code(code: u16) -> QueryType {
        match code {
            1 => QueryType::A,
            2 => QueryType::Ns,
            5 => QueryType::Cname,
            6 => QueryType::Soa,
            12 => QueryType::Ptr,
            15 => QueryType::Mx,
            16 => QueryType::Txt,
            28 => QueryType::Aaaa,
            33 => QueryType::Srv,
            255 => QueryType::Any,
            257 => QueryType::Caa,
            _ => QueryType::Other,
        }
    }

    /// The `qtype` label value: the type's mnemonic in upper case, or "OTHER".
    pub fn label(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Any => "ANY",
            QueryType::Cname => "CNAME",
            QueryType::Mx => "MX",
            QueryType::Ns => "NS",
            QueryType::Soa => "SOA",
            QueryType::Txt => "TXT",
            QueryType::Srv => "SRV",
            QueryType::Caa => "CAA",
            QueryType::Ptr => "PTR",
            QueryType::Other => "OTHER",
        }
    }
}

/// The response codes we count separately; everything else is [`Rcode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rcode {
    /// No error (0).
    NoError,
    /// Format error (1).
    FormErr,
    /// Server failure (2).
    ServFail,
    /// Name does not exist (3).
    NxDomain,
    /// Not implemented (4).
    NotImp,
    /// Refused (5).
    Refused,
    /// Bad EDNS version (16, RFC 6891 §9).
    BadVers,
    /// Any other response code.
    Other,
}

impl Rcode {
    /// Every response code, in label-array order.
    pub const ALL: [Rcode; 8] = [
        Rcode::NoError,
        Rcode::FormErr,
        Rcode::ServFail,
        Rcode::NxDomain,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::BadVers,
        Rcode::Other,
    ];

    /// The response code for a numeric RCODE.
    ///
    /// `code` is the full 12-bit value: RFC 6891 §6.1.3 puts its upper 8 bits in the OPT record,
    /// which is how BADVERS (16) can exist in a 4-bit header field.
    pub fn from_code(code: u16) -> Rcode {
        match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            16 => Rcode::BadVers,
            _ => Rcode::Other,
        }
    }

    /// The `rcode` label value: the code's mnemonic in upper case, or "OTHER".
    pub fn label(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::BadVers => "BADVERS",
            Rcode::Other => "OTHER",
        }
    }
}

/// Events of the DNS transport (rate limiting, malformed input, TCP limits), each counted in
/// one series of its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsEvent {
    /// A rate-limited response sent as an empty TC reply.
    RrlSlipped,
    /// A rate-limited response not sent.
    RrlDropped,
    /// A query that did not decode.
    Malformed,
    /// A TCP connection closed on accept: too many from its address.
    TcpRefusedPerClient,
    /// A TCP connection closed: a message did not arrive whole in time.
    TcpMessageTimeout,
    /// A TCP connection closed: idle too long between messages.
    TcpIdleTimeout,
}

impl DnsEvent {
    /// Every event, in counter-array order.
    pub const ALL: [DnsEvent; 6] = [
        DnsEvent::RrlSlipped,
        DnsEvent::RrlDropped,
        DnsEvent::Malformed,
        DnsEvent::TcpRefusedPerClient,
        DnsEvent::TcpMessageTimeout,
        DnsEvent::TcpIdleTimeout,
    ];

    /// The metric it is counted in, and the label pair of its series, if any.
    pub fn series(self) -> (&'static str, Option<(&'static str, &'static str)>) {
        use super::names::*;
        match self {
            DnsEvent::RrlSlipped => (DNS_RRL_LIMITED_TOTAL, Some(("action", "slipped"))),
            DnsEvent::RrlDropped => (DNS_RRL_LIMITED_TOTAL, Some(("action", "dropped"))),
            DnsEvent::Malformed => (DNS_MALFORMED_QUERIES_TOTAL, None),
            DnsEvent::TcpRefusedPerClient => (
                DNS_TCP_REFUSED_TOTAL,
                Some(("reason", "max_connections_per_client")),
            ),
            DnsEvent::TcpMessageTimeout => (DNS_TCP_TIMEOUTS_TOTAL, Some(("timeout", "message"))),
            DnsEvent::TcpIdleTimeout => (DNS_TCP_TIMEOUTS_TOTAL, Some(("timeout", "idle"))),
        }
    }
}
