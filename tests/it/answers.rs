//! Authoritative behaviour through real sockets: flags, rcodes, negative answers with their SOA,
//! CNAME chains, referrals, ANY, CHAOS, NSID, and the header checks (EDNS version, opcode,
//! question count).
//!
//! Routing by client location is covered in `ecs.rs`; here every routed answer is for the
//! resolver itself (127.0.0.1, which the fixture database cannot place, so `us-east`).

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RData, RecordType};

use crate::client::{self, Ask, a_records, aaaa_records, txt_strings, types};
use crate::support::{CONFIG, IDENTITY, TestServer, ZONE};

/// The example zone plus the shapes the example lacks.
pub(crate) fn zone() -> String {
    format!(
        "{ZONE}
; An empty non-terminal: deep and b.deep exist only because a.b.deep does (RFC 8020).
a.b.deep IN TXT \"leaf\"
; A delegation, with glue below the cut.
sub      IN NS  ns.sub.example.com.
ns.sub   IN A   192.0.2.99
; A CNAME to a name that does not exist, and one that leaves our zones.
dangling IN CNAME gone.example.com.
away     IN CNAME www.example.net.
; Wildcards (RFC 4592): a name of its own below one, and a wildcard CNAME.
*.dyn    IN A   192.0.2.77
*.dyn    IN TXT \"wild\"
host.dyn IN A   192.0.2.78
*.alias  IN CNAME www.example.com.
"
    )
}

async fn server() -> TestServer {
    TestServer::start(CONFIG, &zone()).await
}

/// The negative-answer shape of RFC 2308: no answers, the zone's SOA in authority with the
/// negative-caching TTL (the SOA MINIMUM, 300, is below its own TTL of 3600).
#[track_caller]
fn assert_negative(reply: &Message, rcode: ResponseCode) {
    assert_eq!(reply.metadata.response_code, rcode);
    assert!(reply.metadata.authoritative, "AA on a negative answer");
    assert_eq!(
        types(&reply.authorities),
        [RecordType::SOA],
        "SOA in authority"
    );
    let soa = &reply.authorities[0];
    assert_eq!(soa.name.to_string(), "example.com.");
    assert_eq!(soa.ttl, 300, "negative TTL = min(SOA TTL, MINIMUM)");
    match &soa.data {
        RData::SOA(data) => assert_eq!(data.minimum, 300),
        other => panic!("expected SOA, got {other:?}"),
    }
}

#[tokio::test]
async fn routed_answer_is_authoritative_with_the_service_ttl() {
    let server = server().await;
    let reply = Ask::new("www.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative, "AA");
    assert!(!reply.metadata.truncation, "TC");
    assert!(
        !reply.metadata.recursion_available,
        "an authority offers no recursion"
    );
    // 127.0.0.1 cannot be placed: the configured order's first datacenter, us-east.
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 1)]);
    assert_eq!(reply.answers[0].name.to_string(), "www.example.com.");
    assert_eq!(reply.answers[0].ttl, 30, "the service TTL");
    assert!(reply.authorities.is_empty());
    assert!(
        reply.edns.is_none(),
        "no OPT in reply to a query without one"
    );

    let reply = Ask::new("www.example.com", RecordType::AAAA)
        .udp(server.udp)
        .await;
    assert_eq!(
        aaaa_records(&reply),
        ["2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    assert!(reply.metadata.authoritative);
}

#[tokio::test]
async fn static_records_come_from_the_zone_file() {
    let server = server().await;

    let reply = Ask::new("ns1.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert!(reply.metadata.authoritative);
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 53)]);
    assert_eq!(reply.answers[0].ttl, 3600, "the zone's $TTL");

    let reply = Ask::new("ns2.example.com", RecordType::AAAA)
        .udp(server.udp)
        .await;
    assert_eq!(
        aaaa_records(&reply),
        ["2001:db8:1::53".parse::<std::net::Ipv6Addr>().unwrap()]
    );

    let reply = Ask::new("example.com", RecordType::NS)
        .udp(server.udp)
        .await;
    let mut ns: Vec<String> = reply
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::NS(ns) => ns.0.to_string(),
            other => panic!("expected NS, got {other:?}"),
        })
        .collect();
    ns.sort();
    assert_eq!(ns, ["ns1.example.com.", "ns2.example.com."]);

    let reply = Ask::new("example.com", RecordType::MX)
        .udp(server.udp)
        .await;
    match &reply.answers[..] {
        [record] => match &record.data {
            RData::MX(mx) => {
                assert_eq!(mx.preference, 10);
                assert_eq!(mx.exchange.to_string(), "mail.example.com.");
            }
            other => panic!("expected MX, got {other:?}"),
        },
        other => panic!("expected one MX, got {other:?}"),
    }

    // TXT at the service's own name is static: only its A/AAAA are routed.
    let reply = Ask::new("www.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(types(&reply.answers), [RecordType::TXT]);
    assert_eq!(txt_strings(&reply.answers[0]), ["served by meridian"]);
    assert_eq!(reply.answers[0].ttl, 3600);
}

#[tokio::test]
async fn missing_name_is_nxdomain_with_the_soa() {
    let server = server().await;
    for name in ["nope.example.com", "a.deeper.nope.example.com"] {
        let reply = Ask::new(name, RecordType::A).udp(server.udp).await;
        assert_negative(&reply, ResponseCode::NXDomain);
        assert!(reply.answers.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn missing_type_is_nodata_with_the_soa() {
    let server = server().await;
    // At a routed name, at a static name, and at empty non-terminals (RFC 8020: they exist).
    for (name, qtype) in [
        ("www.example.com", RecordType::MX),
        ("ns1.example.com", RecordType::MX),
        ("mail.example.com", RecordType::AAAA),
        ("deep.example.com", RecordType::A),
        ("b.deep.example.com", RecordType::TXT),
    ] {
        let reply = Ask::new(name, qtype).udp(server.udp).await;
        assert_negative(&reply, ResponseCode::NoError);
        assert!(reply.answers.is_empty(), "{name} {qtype}");
    }
    // The leaf below the empty non-terminals has its record.
    let reply = Ask::new("a.b.deep.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(txt_strings(&reply.answers[0]), ["leaf"]);
}

#[tokio::test]
async fn names_outside_our_zones_are_refused() {
    let server = server().await;
    for name in ["example.org", "www.example.org", "com", "notexample.com"] {
        let reply = Ask::new(name, RecordType::A).udp(server.udp).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(!reply.metadata.authoritative, "{name}: not our zone, no AA");
        assert!(
            reply.answers.is_empty() && reply.authorities.is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn question_case_is_preserved() {
    let server = server().await;
    let reply = Ask::new("WwW.ExAmPlE.cOm", RecordType::A)
        .udp(server.udp)
        .await;
    // Names compare case-insensitively; the bytes must come back as sent (RFC 1034 §3.1,
    // and resolvers using 0x20 randomisation check them).
    assert_eq!(reply.queries[0].name().to_string(), "WwW.ExAmPlE.cOm.");
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 1)]);

    let reply = Ask::new("NS1.EXAMPLE.COM", RecordType::A)
        .tcp(server.tcp)
        .await;
    assert_eq!(reply.queries[0].name().to_string(), "NS1.EXAMPLE.COM.");
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 53)]);
}

#[tokio::test]
async fn cname_is_chased_to_the_routed_answer() {
    let server = server().await;
    let reply = Ask::new("api-docs.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(types(&reply.answers), [RecordType::CNAME, RecordType::A]);
    assert_eq!(reply.answers[0].name.to_string(), "api-docs.example.com.");
    match &reply.answers[0].data {
        RData::CNAME(target) => assert_eq!(target.0.to_string(), "www.example.com."),
        other => panic!("expected CNAME, got {other:?}"),
    }
    assert_eq!(reply.answers[1].name.to_string(), "www.example.com.");
    // The A at the end of the chain is routed for the ECS client (GB: eu-west).
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 3)]);
    let ecs = client::reply_ecs(&reply).expect("ECS echoed");
    assert_eq!(
        ecs.scope_prefix(),
        24,
        "the routed part of the chain sets the scope"
    );

    let reply = Ask::new("api-docs.example.com", RecordType::AAAA)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    assert_eq!(types(&reply.answers), [RecordType::CNAME, RecordType::AAAA]);
    assert_eq!(
        aaaa_records(&reply),
        ["2001:db8::3".parse::<std::net::Ipv6Addr>().unwrap()]
    );

    // Asking for the CNAME itself stops there.
    let reply = Ask::new("api-docs.example.com", RecordType::CNAME)
        .udp(server.udp)
        .await;
    assert_eq!(types(&reply.answers), [RecordType::CNAME]);
}

#[tokio::test]
async fn cname_chain_ending_nowhere_is_nxdomain_with_the_chain() {
    let server = server().await;
    let reply = Ask::new("dangling.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    // RFC 6604 §3: the rcode is that of the last name in the chain.
    assert_negative(&reply, ResponseCode::NXDomain);
    assert_eq!(types(&reply.answers), [RecordType::CNAME]);

    // A chain that leaves our zones is handed to the resolver after the CNAME.
    let reply = Ask::new("away.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(types(&reply.answers), [RecordType::CNAME]);
    assert!(reply.authorities.is_empty());
}

#[tokio::test]
async fn any_is_answered_with_one_rrset() {
    let server = server().await;
    // RFC 8482 §4.1: one RRset of the name, whichever, rather than all of them.
    let reply = Ask::new("example.com", RecordType::ANY)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(
        !reply.answers.is_empty(),
        "ANY at the apex answers something"
    );
    let first = reply.answers[0].record_type();
    assert!(
        reply
            .answers
            .iter()
            .all(|r| r.record_type() == first && r.name.to_string() == "example.com."),
        "one RRset, got {:?}",
        types(&reply.answers)
    );

    // At a routed name, the routed A set.
    let reply = Ask::new("www.example.com", RecordType::ANY)
        .udp(server.udp)
        .await;
    assert_eq!(types(&reply.answers), [RecordType::A]);
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 1)]);
}

#[tokio::test]
async fn delegation_gets_a_referral_with_glue() {
    let server = server().await;
    for name in [
        "sub.example.com",
        "host.sub.example.com",
        "ns.sub.example.com",
    ] {
        let reply = Ask::new(name, RecordType::A).udp(server.udp).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        // RFC 1034 §4.3.2: below a cut we are not authoritative.
        assert!(!reply.metadata.authoritative, "{name}: no AA on a referral");
        assert!(reply.answers.is_empty(), "{name}");
        assert_eq!(types(&reply.authorities), [RecordType::NS], "{name}");
        assert_eq!(reply.authorities[0].name.to_string(), "sub.example.com.");
        assert_eq!(types(&reply.additionals), [RecordType::A], "{name}: glue");
        assert_eq!(reply.additionals[0].name.to_string(), "ns.sub.example.com.");
    }
}

/// Zone transfers, QTYPE 0 and the other meta types, answered as Knot DNS 3.2 answers them
/// (checked with `kdig` against `knotd` serving the same zone, no transfer ACL): QTYPE 0 is
/// NOTIMP for any name and class, AXFR is NOTIMP over UDP and NOTAUTH over TCP, IXFR is
/// NOTAUTH, and MAILA, MAILB, OPT, TSIG and TKEY are looked up like any other type.
#[tokio::test]
async fn zone_transfers_and_meta_types_are_answered_as_knot_does() {
    let server = server().await;
    let error = |reply: &Message, rcode: ResponseCode, what: &str| {
        assert_eq!(reply.metadata.response_code, rcode, "{what}");
        assert!(!reply.metadata.authoritative, "{what}: no AA");
        assert_eq!(reply.queries.len(), 1, "{what}: the question is echoed");
        assert!(
            reply.answers.is_empty() && reply.authorities.is_empty(),
            "{what}"
        );
    };
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let reply = Ask::new("example.com", qtype).tcp(server.tcp).await;
        error(&reply, ResponseCode::NotAuth, &format!("{qtype} over TCP"));
    }
    let reply = Ask::new("example.com", RecordType::AXFR)
        .udp(server.udp)
        .await;
    error(&reply, ResponseCode::NotImp, "AXFR over UDP");
    for (name, class) in [
        ("example.com", DNSClass::IN),
        ("nope.example.com", DNSClass::IN),
        ("example.org", DNSClass::IN),
        ("id.server", DNSClass::CH),
    ] {
        let ask = Ask::new(name, RecordType::ZERO).class(class);
        error(
            &ask.udp(server.udp).await,
            ResponseCode::NotImp,
            &format!("{name} type 0"),
        );
        let reply = ask.edns(1232).udp(server.udp).await;
        error(
            &reply,
            ResponseCode::NotImp,
            &format!("{name} type 0, EDNS"),
        );
        assert!(reply.edns.is_some(), "{name} type 0: the OPT is kept");
    }
    for qtype in [
        RecordType::Unknown(253),
        RecordType::Unknown(254),
        RecordType::OPT,
        RecordType::TSIG,
        RecordType::Unknown(249),
    ] {
        for (name, rcode) in [
            ("example.com", ResponseCode::NoError),
            ("nope.example.com", ResponseCode::NXDomain),
        ] {
            let reply = Ask::new(name, qtype).udp(server.udp).await;
            assert_eq!(reply.metadata.response_code, rcode, "{name} {qtype}");
            assert!(reply.metadata.authoritative, "{name} {qtype}");
            assert!(reply.answers.is_empty(), "{name} {qtype}");
            assert_eq!(
                types(&reply.authorities),
                [RecordType::SOA],
                "{name} {qtype}"
            );
        }
    }
}

#[tokio::test]
async fn chaos_id_server_answers_the_identity() {
    let server = server().await;
    for name in ["id.server", "hostname.bind", "ID.SERVER"] {
        let reply = Ask::new(name, RecordType::TXT)
            .class(DNSClass::CH)
            .udp(server.udp)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(types(&reply.answers), [RecordType::TXT], "{name}");
        assert_eq!(reply.answers[0].dns_class, DNSClass::CH, "{name}");
        assert_eq!(txt_strings(&reply.answers[0]), [IDENTITY], "{name}");
    }
    // `revision.meridian.` shows the state revision: 0 with the embedded store, which has none.
    let reply = Ask::new("Revision.Meridian", RecordType::TXT)
        .class(DNSClass::CH)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(types(&reply.answers), [RecordType::TXT]);
    assert_eq!(reply.answers[0].dns_class, DNSClass::CH);
    assert_eq!(reply.answers[0].name.to_string(), "Revision.Meridian.");
    assert_eq!(txt_strings(&reply.answers[0]), ["0"]);
    let reply = Ask::new("revision.meridian", RecordType::A)
        .class(DNSClass::CH)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    // Other CHAOS names are not ours to answer.
    let reply = Ask::new("version.bind", RecordType::TXT)
        .class(DNSClass::CH)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty());
}

#[tokio::test]
async fn nsid_is_answered_only_when_asked() {
    let server = server().await;
    let reply = Ask::new("www.example.com", RecordType::A)
        .nsid()
        .udp(server.udp)
        .await;
    let edns = reply.edns.as_ref().expect("OPT in reply");
    match edns.option(EdnsCode::NSID) {
        Some(EdnsOption::NSID(payload)) => assert_eq!(payload.as_ref(), IDENTITY.as_bytes()),
        other => panic!("expected NSID {IDENTITY:?}, got {other:?}"),
    }
    assert_eq!(
        a_records(&reply),
        [Ipv4Addr::new(192, 0, 2, 1)],
        "NSID changes no answer"
    );

    // RFC 5001 §2.1: without the option in the query there is none in the reply.
    let reply = Ask::new("www.example.com", RecordType::A)
        .edns(1232)
        .udp(server.udp)
        .await;
    let edns = reply.edns.as_ref().expect("OPT in reply");
    assert!(edns.option(EdnsCode::NSID).is_none());
}

#[tokio::test]
async fn edns_version_1_gets_badvers() {
    let server = server().await;
    let reply = Ask::new("www.example.com", RecordType::A)
        .edns_version(1)
        .udp(server.udp)
        .await;
    // RFC 6891 §6.1.3: BADVERS (16, its high bits in the OPT record) and our own version, 0.
    // hickory decodes 16 as BADSIG, which shares the value (RFC 8945 §5.3): compare numbers.
    assert_eq!(
        u16::from(reply.metadata.response_code),
        u16::from(ResponseCode::BADVERS)
    );
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    let edns = reply.edns.as_ref().expect("BADVERS needs an OPT record");
    assert_eq!(edns.version(), 0);
    assert!(reply.answers.is_empty());
}

#[tokio::test]
async fn other_opcodes_get_notimp() {
    let server = server().await;
    for op_code in [OpCode::Notify, OpCode::Status] {
        let reply = Ask::new("example.com", RecordType::SOA)
            .op_code(op_code)
            .udp(server.udp)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NotImp,
            "{op_code:?}"
        );
        assert!(reply.answers.is_empty(), "{op_code:?}");
    }
}

#[tokio::test]
async fn two_questions_get_formerr() {
    let server = server().await;
    // Header: id 0x4242, flags 0 (standard query), QDCOUNT 2, no other records.
    let mut bytes = vec![0x42, 0x42, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0];
    for _ in 0..2 {
        // www.example.com A IN
        bytes.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    }
    let reply = client::decode(&client::send_udp(server.udp, &bytes).await);
    assert_eq!(reply.metadata.id, 0x4242);
    // RFC 9619: a query has exactly one question.
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert!(reply.answers.is_empty());
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_server() {
    let server = server().await;
    // Shorter than a header: there is nothing to answer, and nothing to wait for.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"\x01\x02\x03", server.udp).await.unwrap();

    // A header announcing a question that is not there: FORMERR with the id.
    let bytes = [0x13, 0x37, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let reply = client::decode(&client::send_udp(server.udp, &bytes).await);
    assert_eq!(reply.metadata.id, 0x1337);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // A question cut off in the middle of its name, over TCP.
    let bytes = b"\x13\x38\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07exa";
    let reply = client::decode(&client::send_tcp(server.tcp, bytes).await);
    assert_eq!(reply.metadata.id, 0x1338);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    let reply = Ask::new("www.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(
        a_records(&reply),
        [Ipv4Addr::new(192, 0, 2, 1)],
        "still serving"
    );
}

#[tokio::test]
async fn tcp_answers_like_udp() {
    let server = server().await;
    for ask in [
        Ask::new("www.example.com", RecordType::A).ecs("81.2.69.0/24"),
        Ask::new("nope.example.com", RecordType::A),
        Ask::new("example.org", RecordType::A),
        Ask::new("api-docs.example.com", RecordType::A).ecs("1.128.0.0/24"),
    ] {
        let over_udp = ask.udp(server.udp).await;
        let over_tcp = ask.tcp(server.tcp).await;
        assert_eq!(over_tcp.metadata, over_udp.metadata);
        assert_eq!(over_tcp.answers, over_udp.answers);
        assert_eq!(over_tcp.authorities, over_udp.authorities);
        assert_eq!(over_tcp.edns, over_udp.edns);
    }
}

#[tokio::test]
async fn one_tcp_connection_carries_several_queries() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = server().await;
    // RFC 7766 §6.2.1: a client may send several queries on one connection without waiting;
    // replies may come in any order, so they are matched by id.
    let asks = [
        Ask::new("www.example.com", RecordType::A).ecs("81.2.69.0/24"),
        Ask::new("ns1.example.com", RecordType::A),
        Ask::new("nope.example.com", RecordType::A),
    ];
    let mut stream = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    let mut framed = Vec::new();
    for ask in &asks {
        let bytes = ask.to_bytes();
        framed.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&bytes);
    }
    stream.write_all(&framed).await.unwrap();
    let mut replies = Vec::new();
    for _ in &asks {
        let read = async {
            let mut len = [0; 2];
            stream.read_exact(&mut len).await?;
            let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply).await?;
            std::io::Result::Ok(reply)
        };
        let bytes = tokio::time::timeout(client::TIMEOUT, read)
            .await
            .expect("a reply within the timeout")
            .expect("read a reply");
        replies.push(client::decode(&bytes));
    }
    stream.set_zero_linger().unwrap();
    replies.sort_by_key(|reply| reply.metadata.id);
    let ids: Vec<u16> = replies.iter().map(|reply| reply.metadata.id).collect();
    assert_eq!(ids, asks.iter().map(Ask::id).collect::<Vec<_>>());
    assert_eq!(a_records(&replies[0]), [Ipv4Addr::new(192, 0, 2, 3)]);
    assert_eq!(a_records(&replies[1]), [Ipv4Addr::new(192, 0, 2, 53)]);
    assert_eq!(replies[2].metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn wildcards_answer_for_names_that_do_not_exist() {
    let server = server().await;
    // Synthesized for any missing name below dyn, at any depth, owned by the name asked.
    for name in ["x.dyn.example.com", "A.b.Dyn.example.com"] {
        let reply = Ask::new(name, RecordType::A).udp(server.udp).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}");
        assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 77)], "{name}");
        assert_eq!(
            reply.answers[0].name.to_string(),
            format!("{name}."),
            "{name}: owner"
        );
    }
    let reply = Ask::new("x.dyn.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(txt_strings(&reply.answers[0]), ["wild"]);
    // A name that exists is never answered by the wildcard (RFC 4592 §2.2.1).
    let reply = Ask::new("host.dyn.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 78)]);
    let reply = Ask::new("host.dyn.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_negative(&reply, ResponseCode::NoError);
    // The wildcard has no MX: NODATA.
    let reply = Ask::new("x.dyn.example.com", RecordType::MX)
        .udp(server.udp)
        .await;
    assert_negative(&reply, ResponseCode::NoError);
    // A wildcard CNAME is synthesized too, and followed to the routed service.
    let reply = Ask::new("y.alias.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(types(&reply.answers), [RecordType::CNAME, RecordType::A]);
    assert_eq!(reply.answers[0].name.to_string(), "y.alias.example.com.");
    // No wildcard at the closest encloser: NXDOMAIN, even below an empty non-terminal.
    for name in ["nope.example.com", "x.deep.example.com"] {
        let reply = Ask::new(name, RecordType::A).udp(server.udp).await;
        assert_negative(&reply, ResponseCode::NXDomain);
    }
}
