//! DNAME (RFC 6672) over real UDP: the record itself, and the CNAME synthesized for names below
//! it, followed inside our zones like any CNAME.
//!
//! The expected answers were checked by hand against Knot DNS 3.2 serving the same zone file
//! (`kdig +norec`): the same sections, owners, targets and TTLs.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::client::Ask;
use crate::support::{CONFIG, TestServer, ZONE};

/// A DNAME out of our zones, one into a subtree of this zone, a CNAME onto a DNAME'd name, and
/// a DNAME whose target is long enough to overflow a long name.
fn zone() -> String {
    let long_target = format!("{}.example.net.", vec!["x".repeat(60); 3].join("."));
    format!(
        "{ZONE}
away    IN DNAME example.net.
d2      600 IN DNAME inner.example.com.
host.inner IN A  192.0.2.80
via     IN CNAME host.d2.example.com.
long    IN DNAME {long_target}
"
    )
}

async fn server() -> TestServer {
    TestServer::start(CONFIG, &zone()).await
}

/// A section as lines: `owner TTL TYPE data`.
fn lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|record| {
            let data = match &record.data {
                RData::CNAME(target) => target.0.to_string(),
                RData::A(address) => address.to_string(),
                RData::SOA(soa) => soa.mname.to_string(),
                RData::Unknown { rdata, .. } if record.record_type() == RecordType::DNAME => {
                    let mut decoder = BinDecoder::new(&rdata.anything);
                    Name::read(&mut decoder)
                        .expect("DNAME data is a name")
                        .to_string()
                }
                other => format!("{other:?}"),
            };
            format!(
                "{} {} {} {data}",
                record.name,
                record.ttl,
                record.record_type()
            )
        })
        .collect()
}

async fn ask(server: &TestServer, name: &str, qtype: RecordType) -> Message {
    Ask::new(name, qtype).udp(server.udp).await
}

#[tokio::test]
async fn a_name_below_a_dname_gets_the_dname_and_a_synthesized_cname() {
    let server = server().await;
    let reply = ask(&server, "www.Away.example.com", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    // RFC 6672 §3.1: the CNAME is owned by the name asked (as asked) and lives as long as the
    // DNAME; the resolver follows its target, which is outside our zones.
    assert_eq!(
        lines(&reply.answers),
        [
            "away.example.com. 3600 DNAME example.net.",
            "www.Away.example.com. 3600 CNAME www.example.net.",
        ]
    );
    assert!(reply.authorities.is_empty(), "{:?}", reply.authorities);

    // Deeper names keep every label above the DNAME's owner.
    let reply = ask(&server, "a.b.away.example.com", RecordType::TXT).await;
    assert_eq!(
        lines(&reply.answers)[1],
        "a.b.away.example.com. 3600 CNAME a.b.example.net."
    );
}

#[tokio::test]
async fn a_dname_into_our_zone_is_followed() {
    let server = server().await;
    let reply = ask(&server, "host.d2.example.com", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        lines(&reply.answers),
        [
            "d2.example.com. 600 DNAME inner.example.com.",
            "host.d2.example.com. 600 CNAME host.inner.example.com.",
            "host.inner.example.com. 3600 A 192.0.2.80",
        ]
    );

    // RFC 6604 §3: the rcode is that of the last name in the chain.
    let reply = ask(&server, "gone.d2.example.com", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        lines(&reply.answers),
        [
            "d2.example.com. 600 DNAME inner.example.com.",
            "gone.d2.example.com. 600 CNAME gone.inner.example.com.",
        ]
    );
    assert_eq!(
        lines(&reply.authorities),
        ["example.com. 300 SOA ns1.example.com."]
    );

    // A CNAME onto a name below the DNAME: the chain goes on through it.
    let reply = ask(&server, "via.example.com", RecordType::A).await;
    assert_eq!(
        lines(&reply.answers),
        [
            "via.example.com. 3600 CNAME host.d2.example.com.",
            "d2.example.com. 600 DNAME inner.example.com.",
            "host.d2.example.com. 600 CNAME host.inner.example.com.",
            "host.inner.example.com. 3600 A 192.0.2.80",
        ]
    );
}

#[tokio::test]
async fn the_dname_owner_itself_is_an_ordinary_name() {
    let server = server().await;
    let reply = ask(&server, "away.example.com", RecordType::DNAME).await;
    assert_eq!(
        lines(&reply.answers),
        ["away.example.com. 3600 DNAME example.net."]
    );
    // RFC 6672 §2.3: the DNAME does not redirect its own name: NODATA for other types.
    let reply = ask(&server, "away.example.com", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "{:?}", reply.answers);
    assert_eq!(
        lines(&reply.authorities),
        ["example.com. 300 SOA ns1.example.com."]
    );
}

#[tokio::test]
async fn a_substitution_longer_than_255_octets_is_yxdomain() {
    let server = server().await;
    // 60 + 1 + 3 * 61 + 13 octets after the substitution: over 255 (RFC 6672 §2.2).
    let name = format!("{}.long.example.com", "y".repeat(60));
    let reply = ask(&server, &name, RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::YXDomain);
    assert_eq!(lines(&reply.answers).len(), 1, "the DNAME alone");
    // A short name below the same DNAME fits and is synthesized.
    let reply = ask(&server, "y.long.example.com", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 2);
}
