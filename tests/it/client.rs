//! A small DNS client for the tests, on hickory-proto's message types: build one query, send it
//! over UDP or TCP, decode the reply.
//!
//! It is deliberately not a resolver: it sends exactly the bytes a test describes (including
//! malformed ones, through `send_udp`), does not retry, and does not fall back to TCP on TC, so
//! every test sees the server's reply as it is. Every wait is bounded by [`TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long any one exchange may take; loopback answers in microseconds.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

/// Query ids: distinct within the test binary, the same on every run.
static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// One query, built up by the test and sent as often as it likes.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    message: Message,
}

impl Ask {
    /// A recursion-less class-IN query for `name` (taken as absolute) and `qtype`, without EDNS.
    pub(crate) fn new(name: &str, qtype: RecordType) -> Ask {
        // Absolute, so that it compares equal to the question decoded from the reply.
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let name = Name::from_ascii(&fqdn).unwrap_or_else(|error| panic!("name {fqdn:?}: {error}"));
        Ask::name(name, qtype)
    }

    /// A recursion-less class-IN query for `name` and `qtype`, without EDNS.
    pub(crate) fn name(name: Name, qtype: RecordType) -> Ask {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        let mut query = Query::query(name, qtype);
        query.set_query_class(DNSClass::IN);
        message.add_query(query);
        Ask { message }
    }

    /// Sets the class of the question (CH for `id.server`).
    pub(crate) fn class(mut self, class: DNSClass) -> Ask {
        self.message.queries[0].set_query_class(class);
        self
    }

    /// Sets the opcode.
    pub(crate) fn op_code(mut self, op_code: OpCode) -> Ask {
        self.message.metadata.op_code = op_code;
        self
    }

    /// Adds EDNS(0) with this UDP payload size (or changes the size).
    pub(crate) fn edns(mut self, payload: u16) -> Ask {
        self.edns_mut().set_max_payload(payload);
        self
    }

    /// Sets the EDNS version (adding EDNS with a 1232-byte payload if needed).
    pub(crate) fn edns_version(mut self, version: u8) -> Ask {
        self.edns_mut().set_version(version);
        self
    }

    /// Adds an EDNS Client Subnet option for `subnet` ("81.2.69.0/24", "2a02:8800::/48"),
    /// sent exactly as written: host bits past the prefix are not cleared.
    pub(crate) fn ecs(mut self, subnet: &str) -> Ask {
        let (addr, source) = parse_subnet(subnet);
        self.edns_mut()
            .options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, 0)));
        self
    }

    /// Asks for the server's NSID (RFC 5001 §2.1: an empty NSID option).
    pub(crate) fn nsid(mut self) -> Ask {
        self.edns_mut().options_mut().insert(EdnsOption::NSID(
            NSIDPayload::new(Vec::new()).expect("an empty payload fits"),
        ));
        self
    }

    /// The query id.
    pub(crate) fn id(&self) -> u16 {
        self.message.metadata.id
    }

    /// The wire form.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.message.to_vec().expect("encode the query")
    }

    /// Sends the query over UDP and decodes the reply.
    pub(crate) async fn udp(&self, server: SocketAddr) -> Message {
        let reply = decode(&send_udp(server, &self.to_bytes()).await);
        self.check_reply(&reply);
        reply
    }

    /// Sends the query over TCP (RFC 1035 §4.2.2: two-byte length prefix) and decodes the reply.
    pub(crate) async fn tcp(&self, server: SocketAddr) -> Message {
        let reply = decode(&send_tcp(server, &self.to_bytes()).await);
        self.check_reply(&reply);
        reply
    }

    /// Every reply must answer this query: same id, a response, the question echoed.
    fn check_reply(&self, reply: &Message) {
        assert_eq!(reply.metadata.id, self.id(), "reply id");
        assert_eq!(reply.metadata.message_type, MessageType::Response, "QR bit");
        assert_eq!(
            reply.metadata.op_code, self.message.metadata.op_code,
            "opcode echoed"
        );
        assert_eq!(reply.queries, self.message.queries, "question echoed");
    }

    fn edns_mut(&mut self) -> &mut Edns {
        self.message.edns.get_or_insert_with(|| {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_version(0);
            edns
        })
    }
}

/// Sends raw bytes over UDP and returns the raw reply.
pub(crate) async fn send_udp(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.expect("bind a client socket");
    // Connected: only datagrams from the server are received.
    socket
        .connect(server)
        .await
        .expect("connect the client socket");
    socket.send(bytes).await.expect("send the query");
    let mut buf = vec![0; 65_535];
    let len = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no UDP reply from {server} within {TIMEOUT:?}"))
        .expect("receive the reply");
    buf.truncate(len);
    buf
}

/// Sends raw bytes as one DNS/TCP message and returns the raw reply.
pub(crate) async fn send_tcp(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let len = u16::try_from(bytes.len()).expect("a DNS message fits in 64 KiB");
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await?;
        let mut len = [0; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        // Close with a reset rather than a FIN: a closing client would keep its port in
        // TIME_WAIT for a minute, and a port in TIME_WAIT cannot be bound by a test server's
        // TCP listener (the port-0 servers take the port their UDP socket got).
        stream.set_zero_linger()?;
        std::io::Result::Ok(reply)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no TCP reply from {server} within {TIMEOUT:?}"))
        .expect("TCP exchange")
}

/// Decodes a reply, failing the test on malformed bytes.
pub(crate) fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|error| panic!("undecodable reply: {error}"))
}

/// How many bytes of a datagram follow the DNS message it holds.
pub(crate) fn trailing_bytes(bytes: &[u8]) -> usize {
    let mut decoder = BinDecoder::new(bytes);
    Message::read(&mut decoder).unwrap_or_else(|error| panic!("undecodable reply: {error}"));
    decoder.len()
}

/// The IPv4 addresses in the answer section, in order.
pub(crate) fn a_records(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The IPv6 addresses in the answer section, in order.
pub(crate) fn aaaa_records(reply: &Message) -> Vec<Ipv6Addr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect()
}

/// The TXT strings of a record, each as text.
pub(crate) fn txt_strings(record: &Record) -> Vec<String> {
    match &record.data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
        other => panic!("expected TXT, got {other:?}"),
    }
}

/// The record types of a section, in order.
pub(crate) fn types(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(|record| record.record_type()).collect()
}

/// The ECS option of the reply, if any.
pub(crate) fn reply_ecs(reply: &Message) -> Option<ClientSubnet> {
    match reply.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(subnet) => Some(*subnet),
        other => panic!("Subnet code holding {other:?}"),
    }
}

/// `"81.2.69.0/24"` as an address and a prefix length.
pub(crate) fn parse_subnet(subnet: &str) -> (IpAddr, u8) {
    let (addr, len) = subnet
        .split_once('/')
        .unwrap_or_else(|| panic!("{subnet:?} is not addr/len"));
    (
        addr.parse()
            .unwrap_or_else(|_| panic!("{subnet:?}: bad address")),
        len.parse()
            .unwrap_or_else(|_| panic!("{subnet:?}: bad prefix length")),
    )
}
