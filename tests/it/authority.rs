//! Answers as an authoritative server gives them (issue 10 §2): DS at a delegation point from
//! the parent, RRSIG/NSEC at a CNAME for the name itself, the DO bit echoed, CHAOS
//! `version.bind` when configured.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::client::{Ask, decode, send_udp, txt_strings, types};
use crate::support::{CONFIG, TestServer, ZONE};

/// The example zone plus a signed-style delegation (`sub`, with DS and glue), an unsigned one
/// (`plain`, no DS, out-of-bailiwick NS) and a CNAME.
fn zone() -> String {
    format!(
        "{ZONE}sub IN NS ns.sub.example.com.\nns.sub IN A 192.0.2.77\nsub IN DS 12345 13 2 {}\nplain IN NS ns.example.net.\nalias IN CNAME mail.example.com.\n",
        "ab".repeat(32)
    )
}

#[tokio::test]
async fn ds_at_a_delegation_point_is_answered_by_the_parent() {
    let server = TestServer::start(CONFIG, &zone()).await;
    let reply = Ask::new("sub.example.com", RecordType::DS)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(
        reply.metadata.authoritative,
        "the parent is authoritative for DS"
    );
    assert_eq!(types(&reply.answers), [RecordType::DS]);
    assert!(reply.authorities.is_empty());

    let reply = Ask::new("plain.example.com", RecordType::DS)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty(), "no DS: NODATA");
    assert_eq!(types(&reply.authorities), [RecordType::SOA]);

    // Every other type at the cut, and DS below it, is still a referral.
    for (name, qtype) in [
        ("sub.example.com", RecordType::A),
        ("www.sub.example.com", RecordType::DS),
    ] {
        let reply = Ask::new(name, qtype).udp(server.udp).await;
        assert!(!reply.metadata.authoritative, "{name} {qtype}");
        assert_eq!(
            types(&reply.authorities),
            [RecordType::NS],
            "{name} {qtype}"
        );
    }
}

#[tokio::test]
async fn rrsig_and_nsec_at_a_cname_are_answered_for_the_name_itself() {
    let server = TestServer::start(CONFIG, &zone()).await;
    for qtype in [RecordType::RRSIG, RecordType::NSEC] {
        let reply = Ask::new("alias.example.com", qtype).udp(server.udp).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(
            reply.answers.is_empty(),
            "{qtype}: the CNAME is not followed"
        );
        assert_eq!(types(&reply.authorities), [RecordType::SOA], "{qtype}");
    }
    let reply = Ask::new("alias.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(types(&reply.answers), [RecordType::CNAME, RecordType::A]);
}

#[tokio::test]
async fn the_do_bit_is_copied_into_the_reply() {
    let server = TestServer::start(CONFIG, ZONE).await;
    for dnssec_ok in [false, true] {
        let mut bytes = Ask::new("mail.example.com", RecordType::A)
            .edns(1232)
            .to_bytes();
        // The query ends with its OPT record: ... TTL (extended rcode, version, flags), RDLENGTH
        // 0; DO is the top bit of the flags (RFC 3225 §3).
        let n = bytes.len();
        if dnssec_ok {
            bytes[n - 4] |= 0x80;
        }
        let reply = decode(&send_udp(server.udp, &bytes).await);
        let edns = reply.edns.expect("an OPT record");
        assert_eq!(edns.flags().dnssec_ok, dnssec_ok);
    }
}

#[tokio::test]
async fn version_bind_is_refused_unless_configured() {
    let server = TestServer::start(CONFIG, ZONE).await;
    let ask = Ask::new("version.bind", RecordType::TXT).class(DNSClass::CH);
    let reply = ask.udp(server.udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    let config = CONFIG.replacen("server:\n", "server:\n  version: \"meridian 0.1\"\n", 1);
    let server = TestServer::start(&config, ZONE).await;
    for name in ["version.bind", "version.server"] {
        let reply = Ask::new(name, RecordType::TXT)
            .class(DNSClass::CH)
            .udp(server.udp)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(txt_strings(&reply.answers[0]), ["meridian 0.1"], "{name}");
    }
}

/// The example zone plus MX, SRV and NS targets in the zone, a delegation whose NS lie inside
/// it (in-domain glue), under a sibling delegation (sibling glue) and at the zone's own name
/// server, and a delegation whose in-domain glue is too big for 512 bytes.
fn additional_zone() -> String {
    let mut zone = format!(
        "{ZONE}\
mx IN MX 10 mail.example.com.\n\
mx IN MX 20 mx2.example.com.\n\
mx IN MX 30 mail.example.net.\n\
mx2 IN AAAA 2001:db8::25\n\
_sip._udp IN SRV 0 5 5060 sip.example.com.\n\
sip IN A 192.0.2.60\n\
child IN NS ns.child.example.com.\n\
child IN NS ns.sibling.example.com.\n\
child IN NS ns1.example.com.\n\
ns.child IN A 192.0.2.71\n\
sibling IN NS ns.sibling.example.com.\n\
ns.sibling IN A 192.0.2.72\n\
big IN NS ns.big.example.com.\n\
big IN NS ns1.example.com.\n"
    );
    for i in 1..=40 {
        zone.push_str(&format!("ns.big IN A 192.0.2.{i}\n"));
    }
    zone
}

#[tokio::test]
async fn additional_section_holds_addresses_of_in_zone_targets() {
    let server = TestServer::start(CONFIG, &additional_zone()).await;
    let additional = |reply: &hickory_proto::op::Message| -> Vec<String> {
        reply
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect()
    };
    // MX: the targets this zone holds, A and AAAA; not the one outside it.
    let reply = Ask::new("mx.example.com", RecordType::MX)
        .udp(server.udp)
        .await;
    assert_eq!(types(&reply.answers), [RecordType::MX; 3]);
    assert_eq!(
        additional(&reply),
        ["mail.example.com. A", "mx2.example.com. AAAA"]
    );
    // SRV, and NS at the apex.
    let reply = Ask::new("_sip._udp.example.com", RecordType::SRV)
        .udp(server.udp)
        .await;
    assert_eq!(additional(&reply), ["sip.example.com. A"]);
    let reply = Ask::new("example.com", RecordType::NS)
        .udp(server.udp)
        .await;
    assert_eq!(
        additional(&reply),
        [
            "ns1.example.com. A",
            "ns1.example.com. AAAA",
            "ns2.example.com. A",
            "ns2.example.com. AAAA"
        ]
    );
    // A referral: in-domain glue, then sibling glue and the parent's own name server.
    let reply = Ask::new("www.child.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert!(!reply.metadata.authoritative);
    assert_eq!(types(&reply.authorities), [RecordType::NS; 3]);
    assert_eq!(
        additional(&reply),
        [
            "ns.child.example.com. A",
            "ns.sibling.example.com. A",
            "ns1.example.com. A",
            "ns1.example.com. AAAA"
        ]
    );
}

#[tokio::test]
async fn only_missing_in_domain_glue_truncates() {
    let server = TestServer::start(CONFIG, &additional_zone()).await;
    // 40 in-domain glue records (16 bytes each) do not fit 512 bytes: RFC 9471 §3, TC.
    let reply = Ask::new("www.big.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert!(
        reply.metadata.truncation,
        "in-domain glue that does not fit"
    );
    let whole = Ask::new("www.big.example.com", RecordType::A)
        .tcp(server.tcp)
        .await;
    assert_eq!(whole.additionals.len(), 42, "40 glue, ns1's A and AAAA");
    // With room for the glue but not for ns1's A and AAAA (16 and 28 bytes): the glue, no TC.
    let ask = Ask::new("www.big.example.com", RecordType::A).edns(4096);
    let whole = crate::client::send_tcp(server.tcp, &ask.to_bytes())
        .await
        .len();
    let reply = Ask::new("www.big.example.com", RecordType::A)
        .edns(u16::try_from(whole - 20).unwrap())
        .udp(server.udp)
        .await;
    assert!(
        !reply.metadata.truncation,
        "optional addresses are left out instead"
    );
    assert_eq!(reply.additionals.len(), 40, "every in-domain glue record");
    assert!(
        reply
            .additionals
            .iter()
            .all(|r| r.name.to_string() == "ns.big.example.com.")
    );
}

/// Each record of a section as `owner type data`, in order.
fn section(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

#[tokio::test]
async fn cname_chains_continue_through_wildcards_and_stop_at_loops() {
    let zone = format!(
        "{ZONE}\
*.wild IN CNAME target.example.com.\n\
target IN A 192.0.2.80\n\
*.w2 IN A 192.0.2.81\n\
to-wild IN CNAME X.w2.example.com.\n\
*.chain IN CNAME y.w2.example.com.\n\
*.loop IN CNAME z.loop.example.com.\n\
loop1 IN CNAME loop2.example.com.\n\
loop2 IN CNAME loop1.example.com.\n"
    );
    let server = TestServer::start(CONFIG, &zone).await;
    let cases: [(&str, &[&str]); 5] = [
        // A CNAME synthesized from a wildcard, owned by the name asked (its case kept), then
        // its in-zone target.
        (
            "A.Wild.example.com",
            &[
                "A.Wild.example.com. CNAME target.example.com.",
                "target.example.com. A 192.0.2.80",
            ],
        ),
        // A CNAME whose target matches a wildcard: the A owned by the target as written.
        (
            "to-wild.example.com",
            &[
                "to-wild.example.com. CNAME X.w2.example.com.",
                "X.w2.example.com. A 192.0.2.81",
            ],
        ),
        // Both: a wildcard CNAME into another wildcard.
        (
            "q.chain.example.com",
            &[
                "q.chain.example.com. CNAME y.w2.example.com.",
                "y.w2.example.com. A 192.0.2.81",
            ],
        ),
        // A wildcard CNAME whose target matches the same wildcard: one loop, then stop.
        (
            "q.loop.example.com",
            &[
                "q.loop.example.com. CNAME z.loop.example.com.",
                "z.loop.example.com. CNAME z.loop.example.com.",
            ],
        ),
        // Two CNAMEs naming each other: each once.
        (
            "loop1.example.com",
            &[
                "loop1.example.com. CNAME loop2.example.com.",
                "loop2.example.com. CNAME loop1.example.com.",
            ],
        ),
    ];
    for (name, expected) in cases {
        for reply in [
            Ask::new(name, RecordType::A).udp(server.udp).await,
            Ask::new(name, RecordType::A).tcp(server.tcp).await,
        ] {
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert!(reply.metadata.authoritative, "{name}");
            assert_eq!(section(&reply.answers), expected, "{name}");
            assert!(reply.authorities.is_empty(), "{name}");
        }
    }
}
