//! Zone files loaded and served exactly as written (issue 10 §1), and the checks made before a
//! zone is served (issue 7 §3).
//!
//! What the server sends is checked octet by octet: the queries are built and the replies read
//! here from raw bytes over real UDP, so neither hickory's text parser nor its decoder stands
//! between the zone file and the assertion. Expected octets are written out from the RFCs.

use std::net::Ipv4Addr;
use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::client::{Ask, a_records, send_udp};
use crate::support::{CONFIG, CONFIG_FILE, TestServer, ZONE, ZONE_FILE, config_dir};

/// The example zone plus one name per escape case and per type.
fn zone() -> String {
    format!(
        r#"{ZONE}
; Character strings: \DDD is a decimal octet (RFC 1035 §5.1).
txt-nl      IN TXT   "\010"
txt-a       IN TXT   "a\065b"
txt-bare    IN TXT   abc\032def
txt-multi   IN TXT   "one" "\"two\"" "\\" ""
txt-high    IN TXT   "\255\000\128"
naptr       IN NAPTR 100 10 "U" "E2U+sip" "!^.*$!sip:info\064example.com!" .
hinfo       IN HINFO "\255cpu" "os\010"
caa         IN CAA   0 issue "ca.example.net\059 account=\230"
; Owners with escaped characters.
a\065b      IN TXT   "escaped A"
sp\032ace   IN TXT   "space"
dot\.ted    IN TXT   "dot"
back\\slash IN TXT   "backslash"
nul\000     IN TXT   "nul"
; Types hickory's master-file parser refused.
dname       IN DNAME example.net.
generic     IN TYPE65534 \# 3 010203
empty       IN TYPE65533 \# 0
known       IN A     \# 4 C0000207
loc         IN LOC   42 21 54 N 71 06 18 W -24m 30m
uri         IN URI   10 1 "https://example.com/a b"
spf         IN SPF   "v=spf1 -all"
rp          IN RP    hostmaster.example.com. txt.example.com.
apl         IN APL   1:192.168.32.0/21 !1:192.168.38.0/28
sshfp       IN SSHFP 4 2 ( 0123456789abcdef
                           0123456789ABCDEF )
tlsa        IN TLSA  3 1 1 0a0b
dnskey      IN DNSKEY 257 3 ECDSAP256SHA256 AQID BA==
cds         IN CDS   0 0 0 00
srv         IN SRV   1 2 443 target.example.net.
https       IN HTTPS 1 . alpn="h2,h3" port=8443 ipv4hint=192.0.2.1
"#
    )
}

/// A query for the name made of `labels` (below example.com) and type `qtype`, without EDNS.
fn query(labels: &[&[u8]], qtype: u16) -> Vec<u8> {
    let mut bytes = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in labels.iter().chain([&&b"example"[..], &&b"com"[..]]) {
        bytes.push(u8::try_from(label.len()).expect("a short label"));
        bytes.extend_from_slice(label);
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&1_u16.to_be_bytes());
    bytes
}

/// One record of a reply's answer section as it was on the wire.
#[derive(Debug, PartialEq, Eq)]
struct Wire {
    /// The owner's labels, compression pointers followed.
    owner: Vec<Vec<u8>>,
    rtype: u16,
    rdata: Vec<u8>,
}

/// The rcode and the answer section of a raw reply.
fn answers(reply: &[u8]) -> (u8, Vec<Wire>) {
    let u16_at = |at: usize| u16::from_be_bytes([reply[at], reply[at + 1]]);
    let rcode = reply[3] & 0x0f;
    let n_answers = u16_at(6);
    let (_, mut at) = name(reply, 12);
    at += 4;
    let mut records = Vec::new();
    for _ in 0..n_answers {
        let (owner, end) = name(reply, at);
        let rtype = u16_at(end);
        let len = usize::from(u16_at(end + 8));
        let start = end + 10;
        records.push(Wire {
            owner,
            rtype,
            rdata: reply[start..start + len].to_vec(),
        });
        at = start + len;
    }
    (rcode, records)
}

/// The labels of the name at `at` and the offset after it (after the first pointer, if any).
fn name(message: &[u8], mut at: usize) -> (Vec<Vec<u8>>, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    loop {
        let len = message[at];
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = usize::from(u16::from_be_bytes([len & 0x3f, message[at + 1]]));
            continue;
        }
        if len == 0 {
            return (labels, end.unwrap_or(at + 1));
        }
        let start = at + 1;
        labels.push(message[start..start + usize::from(len)].to_vec());
        at = start + usize::from(len);
    }
}

fn labels(first: &[u8]) -> Vec<Vec<u8>> {
    vec![first.to_vec(), b"example".to_vec(), b"com".to_vec()]
}

/// `name.example.com.` in wire form.
fn wire_name(parts: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.push(u8::try_from(part.len()).expect("a short label"));
        bytes.extend_from_slice(part);
    }
    bytes.push(0);
    bytes
}

#[tokio::test]
async fn records_are_sent_exactly_as_written() {
    let server = TestServer::start(CONFIG, &zone()).await;
    let hm = wire_name(&[b"hostmaster", b"example", b"com"]);
    let txt = wire_name(&[b"txt", b"example", b"com"]);
    let cases: Vec<(&[u8], u16, Vec<u8>)> = vec![
        (b"txt-nl", 16, vec![1, 10]),
        (b"txt-a", 16, b"\x03aAb".to_vec()),
        (b"txt-bare", 16, b"\x07abc def".to_vec()),
        (b"txt-multi", 16, b"\x03one\x05\"two\"\x01\\\x00".to_vec()),
        (b"txt-high", 16, vec![3, 255, 0, 128]),
        (
            b"naptr",
            35,
            b"\x00\x64\x00\x0a\x01U\x07E2U+sip\x1b!^.*$!sip:info@example.com!\x00".to_vec(),
        ),
        (b"hinfo", 13, b"\x04\xffcpu\x03os\x0a".to_vec()),
        (
            b"caa",
            257,
            b"\x00\x05issueca.example.net; account=\xe6".to_vec(),
        ),
        (b"dname", 39, wire_name(&[b"example", b"net"])),
        (b"generic", 65534, vec![1, 2, 3]),
        (b"empty", 65533, vec![]),
        (b"known", 1, vec![192, 0, 2, 7]),
        // RFC 1876 §4's own example.
        (
            b"loc",
            29,
            vec![
                0x00, 0x33, 0x16, 0x13, 0x89, 0x17, 0x2d, 0xd0, 0x70, 0xbe, 0x15, 0xf0, 0x00, 0x98,
                0x8d, 0x20,
            ],
        ),
        (
            b"uri",
            256,
            b"\x00\x0a\x00\x01https://example.com/a b".to_vec(),
        ),
        (b"spf", 99, b"\x0bv=spf1 -all".to_vec()),
        (b"rp", 17, [hm, txt].concat()),
        // RFC 3123 §4: trailing zero octets of the address are not sent.
        (
            b"apl",
            42,
            b"\x00\x01\x15\x03\xc0\xa8\x20\x00\x01\x1c\x83\xc0\xa8\x26".to_vec(),
        ),
        (
            b"sshfp",
            44,
            [
                &[4, 2][..],
                &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
                &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            ]
            .concat(),
        ),
        (b"tlsa", 52, vec![3, 1, 1, 0x0a, 0x0b]),
        (b"dnskey", 48, vec![0x01, 0x01, 3, 13, 1, 2, 3, 4]),
        (b"cds", 59, vec![0, 0, 0, 0, 0]),
        // RFC 2782: the target is not compressed.
        (
            b"srv",
            33,
            [
                &[0, 1, 0, 2, 0x01, 0xbb][..],
                &wire_name(&[b"target", b"example", b"net"]),
            ]
            .concat(),
        ),
        // RFC 9460: parameters sorted by key, the value list as length-prefixed items.
        (
            b"https",
            65,
            [
                &[0, 1, 0][..],
                &[0, 1, 0, 6, 2, b'h', b'2', 2, b'h', b'3'],
                &[0, 3, 0, 2, 0x20, 0xfb],
                &[0, 4, 0, 4, 192, 0, 2, 1],
            ]
            .concat(),
        ),
    ];
    for (label, qtype, rdata) in cases {
        let reply = send_udp(server.udp, &query(&[label], qtype)).await;
        let (rcode, records) = answers(&reply);
        let shown = String::from_utf8_lossy(label);
        assert_eq!(rcode, 0, "{shown}: NOERROR");
        assert_eq!(
            records,
            [Wire {
                owner: labels(label),
                rtype: qtype,
                rdata
            }],
            "{shown} type {qtype}"
        );
    }
}

#[tokio::test]
async fn owners_with_escaped_characters_are_found_by_their_octets() {
    let server = TestServer::start(CONFIG, &zone()).await;
    let cases: [(&[u8], &[u8]); 5] = [
        (b"aAb", b"escaped A"),
        (b"sp ace", b"space"),
        (b"dot.ted", b"dot"),
        (b"back\\slash", b"backslash"),
        (b"nul\x00", b"nul"),
    ];
    for (label, text) in cases {
        let reply = send_udp(server.udp, &query(&[label], 16)).await;
        let (rcode, records) = answers(&reply);
        let mut rdata = vec![u8::try_from(text.len()).unwrap()];
        rdata.extend_from_slice(text);
        assert_eq!(rcode, 0, "{}", String::from_utf8_lossy(label));
        assert_eq!(
            records,
            [Wire {
                owner: labels(label),
                rtype: 16,
                rdata
            }]
        );
    }
    // `a\065b` is the label "aAb" (names compare without case), never "a5b".
    let reply = send_udp(server.udp, &query(&[b"AAB"], 16)).await;
    assert_eq!(answers(&reply).1.len(), 1, "case-insensitive match");
    let reply = send_udp(server.udp, &query(&[b"a5b"], 16)).await;
    assert_eq!(answers(&reply).0, 3, "a5b does not exist");
    // Where the dot is matters: `dot\.ted` is one label, `dot.ted` would be two.
    let reply = send_udp(server.udp, &query(&[b"ted", b"dot"], 16)).await;
    assert_eq!(answers(&reply).0, 3, "ted.dot does not exist");
}

#[tokio::test]
async fn included_files_are_served_and_keep_the_parent_origin() {
    // The server reads its zone as it starts, so the included file is written first (relative
    // paths are covered by the reader's unit tests).
    let extra = tempfile::tempdir().expect("create a temporary directory");
    let path = extra.path().join("extra.zone");
    std::fs::write(&path, "inside IN A 192.0.2.70\n").expect("write the included file");
    let zone = format!(
        "{ZONE}$INCLUDE {} sub.example.com.\nafter IN A 192.0.2.71\n",
        path.display()
    );
    let server = TestServer::start(CONFIG, &zone).await;
    for (name, address) in [
        ("inside.sub.example.com", [192, 0, 2, 70]),
        ("after.example.com", [192, 0, 2, 71]),
    ] {
        let reply = Ask::new(name, RecordType::A).udp(server.udp).await;
        assert_eq!(a_records(&reply), [Ipv4Addr::from(address)], "{name}");
    }
}

/// The problems of loading the example configuration with `zone_text` as its zone.
fn load_problems(zone_text: &str) -> Vec<String> {
    let dir = config_dir(CONFIG);
    std::fs::write(dir.path().join(ZONE_FILE), zone_text).unwrap();
    let source = meridian::config::Source::File(dir.path().join(CONFIG_FILE));
    match meridian::dns::Loaded::load(&source) {
        Ok(_) => Vec::new(),
        Err(error) => error
            .problems
            .iter()
            .map(|p| {
                // Paths differ per run: keep the file name and what follows it.
                let message = p.message.clone();
                match message.find(ZONE_FILE) {
                    Some(i) => message[i..].to_owned(),
                    None => message,
                }
            })
            .collect(),
    }
}

/// The example zone's first 14 lines (comments, directives, the apex records) and then
/// `rest`, so that `rest` starts on line 15.
fn with_apex(rest: &str) -> String {
    let apex: Vec<&str> = ZONE.lines().take(14).collect();
    assert!(
        apex[13].contains("TXT"),
        "the example zone's apex ends on line 14"
    );
    format!("{}\n{rest}", apex.join("\n"))
}

#[test]
fn the_semantic_checks_name_file_line_and_record() {
    let cases: &[(&str, &str)] = &[
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nalias IN CNAME x.example.net.\nalias IN TXT \"also\"\n",
            "example.com.zone:17: alias.example.com. CNAME: a CNAME must be the only data at its name (RFC 1034 §3.6.2), but there is also TXT at ",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nalias IN CNAME a.example.net.\nalias IN CNAME b.example.net.\n",
            "example.com.zone:18: alias.example.com. CNAME: a second CNAME at one name",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\n@ IN SOA ns1 hm 2 1 1 1 1\n",
            "example.com.zone:17: a second SOA at the apex example.com.",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nx IN SOA ns1 hm 2 1 1 1 1\n",
            "example.com.zone:17: x.example.com. SOA: an SOA record belongs at the apex example.com. only",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nsub IN NS ns.sub\n",
            "example.com.zone:17: sub.example.com. NS ns.sub.example.com.: glue is missing",
        ),
        (
            "ns1 IN A 192.0.2.53\n",
            "example.com.zone:12: example.com. NS ns2.example.com.: the name server is in this zone but has no A or AAAA record",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN CNAME ns1\n",
            "example.com.zone:12: example.com. NS ns2.example.com.: the name server is an alias",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nmail.example.net. IN A 192.0.2.1\n",
            "example.com.zone:17: mail.example.net. A is outside the zone example.com.",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nx IN A 192.0.2.1\nX IN A 192.0.2.1\n",
            "example.com.zone:18: X.example.com. A: the same record is already at ",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nx 60 IN A 192.0.2.1\nx 70 IN A 192.0.2.2\n",
            "example.com.zone:18: x.example.com. A: TTL 70 differs from the TTL 60 of the same RRset",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nd IN DNAME example.net.\nx.d IN A 192.0.2.1\n",
            "example.com.zone:18: x.d.example.com. A: the name is below the DNAME at d.example.com.",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nx IN TXT \"\\300\"\n",
            "example.com.zone:17: \"\\300\" is not an octet: \\DDD is a decimal value from 000 to 255",
        ),
        (
            "ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\nx IN RRSIG \\# 1 00\n",
            "example.com.zone:17: RRSIG records are not accepted: meridian does not serve DNSSEC-signed zones",
        ),
    ];
    for (rest, expected) in cases {
        let problems = load_problems(&with_apex(rest));
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "expected a problem starting with\n  {expected}\ngot\n  {problems:#?}"
        );
    }
    let problems = load_problems("$TTL 60\nx IN A 192.0.2.1\n");
    assert!(
        problems.contains(&"example.com.zone: the apex example.com. has no SOA record".to_owned()),
        "{problems:#?}"
    );
    assert!(
        problems.contains(&"example.com.zone: the apex example.com. has no NS records".to_owned()),
        "{problems:#?}"
    );
    // The apex lines alone, with the name servers' addresses, load.
    let fine = with_apex("ns1 IN A 192.0.2.53\nns2 IN A 198.51.100.53\n");
    assert_eq!(load_problems(&fine), Vec::<String>::new());
}

#[test]
fn check_config_prints_file_line_and_text() {
    let dir = config_dir(CONFIG);
    std::fs::write(
        dir.path().join(ZONE_FILE),
        format!("{ZONE}bad IN TXT \"a\\256\"\nworse IN AAAA 2001:db8::zz\n"),
    )
    .unwrap();
    // check-config only reads and validates, so it exits on its own.
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check-config", "--config"])
        .arg(dir.path().join(CONFIG_FILE))
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run meridian check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines = ZONE.lines().count();
    for expected in [
        format!("example.com.zone:{}: \"\\256\" is not an octet", lines + 1),
        format!(
            "example.com.zone:{}: \"2001:db8::zz\" is not an IPv6 address",
            lines + 2
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in\n{stderr}"
        );
    }
    // The file is named once per problem: the configuration path, then `file:line`.
    for line in stderr.lines().filter(|line| line.contains("is not an")) {
        assert_eq!(line.matches(ZONE_FILE).count(), 1, "{line}");
        assert!(line.contains("zones[0]"), "{line}");
    }
}
