//! Conformance with Knot DNS: meridian and `knotd` serve the same zone files
//! (`tests/conformance/`: a parent with wildcards at several depths, delegations with in-domain,
//! sibling and out-of-bailiwick name servers and glue, DS, CNAME chains in and out of the zone,
//! through wildcards and in loops, DNAME, empty non-terminals, escaped labels and strings, every
//! common type and an RRset that must truncate; and a child zone served beside it), and every
//! question below is asked of both, with and without EDNS, and the answers compared: rcode, AA,
//! TC, and each section (records compared without regard to order or case; OPT apart).
//!
//! The comparison runs when `knotd` is installed (CI installs the Debian `knot` package); without
//! it the test says so and compares nothing. `exact_answers_without_knot` checks a set of answers
//! (found with Knot) against meridian alone, always.
//!
//! Where meridian differs from Knot on purpose, `DIFFERENCES` says so and why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, Record, RecordType};

use crate::client::{self, Ask};
use crate::support::{CONFIG, Setup, TestServer};

/// The conformance zones, as files.
fn zone_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn zone_text(name: &str) -> String {
    std::fs::read_to_string(zone_dir().join(name)).expect("read a conformance zone")
}

/// The test configuration serving both zones.
fn config() -> String {
    CONFIG.replace(
        "zones:\n  - origin: example.com\n    file: example.com.zone\n",
        "zones:\n  - origin: example.com\n    file: example.com.zone\n  - origin: child.example.com\n    file: child.example.com.zone\n",
    )
}

async fn meridian() -> TestServer {
    let mut setup = Setup::new(&config(), &zone_text("example.com.zone"));
    setup.files.push((
        "child.example.com.zone".to_owned(),
        zone_text("child.example.com.zone"),
    ));
    TestServer::launch(setup).await
}

/// Every question asked: (name, type).
const QUESTIONS: &[(&str, RecordType)] = &[
    // The apex, and types at an existing name.
    ("example.com", RecordType::SOA),
    ("example.com", RecordType::NS),
    ("example.com", RecordType::MX),
    ("example.com", RecordType::TXT),
    ("example.com", RecordType::AAAA),
    ("example.com", RecordType::ANY),
    ("host.example.com", RecordType::ANY),
    ("host.example.com", RecordType::A),
    ("host.example.com", RecordType::AAAA),
    ("host.example.com", RecordType::TXT),
    ("host.example.com", RecordType::HINFO),
    ("host.example.com", RecordType::SSHFP),
    ("host.example.com", RecordType::CAA),
    ("host.example.com", RecordType::Unknown(17)),
    ("host.example.com", RecordType::Unknown(99)),
    ("host.example.com", RecordType::Unknown(65534)),
    ("host.example.com", RecordType::MX),
    ("HoSt.ExAmPlE.cOm", RecordType::A),
    ("_sip._udp.example.com", RecordType::SRV),
    ("naptr.example.com", RecordType::NAPTR),
    ("_443._tcp.example.com", RecordType::TLSA),
    ("ptr.example.com", RecordType::PTR),
    ("loc.example.com", RecordType::Unknown(29)),
    // Names that do not exist, and empty non-terminals.
    ("nothere.example.com", RecordType::A),
    ("ent.example.com", RecordType::A),
    ("c.ent.example.com", RecordType::TXT),
    ("b.c.ent.example.com", RecordType::A),
    ("a.b.c.ent.example.com", RecordType::A),
    ("x.a.b.c.ent.example.com", RecordType::A),
    // Escaped labels and strings.
    ("aAb.example.com", RecordType::TXT),
    ("sp\\032ace.example.com", RecordType::A),
    ("dot\\.ted.example.com", RecordType::A),
    ("back\\\\slash.example.com", RecordType::A),
    // Wildcards.
    ("x.wild.example.com", RecordType::A),
    ("x.wild.example.com", RecordType::TXT),
    ("x.wild.example.com", RecordType::MX),
    ("a.b.wild.example.com", RecordType::A),
    ("host.wild.example.com", RecordType::A),
    ("host.wild.example.com", RecordType::TXT),
    ("wild.example.com", RecordType::A),
    ("x.deep.wild2.example.com", RecordType::A),
    ("deep.wild2.example.com", RecordType::A),
    ("x.wild2.example.com", RecordType::A),
    ("x.wmx.example.com", RecordType::MX),
    // CNAME chains.
    ("c1.example.com", RecordType::A),
    ("c1.example.com", RecordType::CNAME),
    ("c1.example.com", RecordType::TXT),
    ("cext.example.com", RecordType::A),
    ("cnx.example.com", RecordType::A),
    ("cwild.example.com", RecordType::A),
    ("x.wcname.example.com", RecordType::A),
    ("x.wcname.example.com", RecordType::CNAME),
    ("x.wcext.example.com", RecordType::A),
    ("x.wcwild.example.com", RecordType::A),
    ("cchild.example.com", RecordType::A),
    ("cloop1.example.com", RecordType::A),
    ("x.wloop.example.com", RecordType::A),
    // DNAME.
    ("dn.example.com", RecordType::DNAME),
    ("dn.example.com", RecordType::A),
    ("x.dn.example.com", RecordType::A),
    ("y.dn.example.com", RecordType::A),
    ("x.dn.example.com", RecordType::CNAME),
    ("www.dnext.example.com", RecordType::A),
    ("cdn.example.com", RecordType::A),
    // Delegations, DS, the child zone.
    ("child.example.com", RecordType::DS),
    ("child.example.com", RecordType::SOA),
    ("child.example.com", RecordType::NS),
    ("child.example.com", RecordType::A),
    ("x.child.example.com", RecordType::DS),
    ("ns1.child.example.com", RecordType::A),
    ("host.child.example.com", RecordType::A),
    ("nothere.child.example.com", RecordType::A),
    ("www.deleg.example.com", RecordType::A),
    ("deleg.example.com", RecordType::NS),
    ("deleg.example.com", RecordType::DS),
    ("ns.deleg.example.com", RecordType::A),
    ("www.other.example.com", RecordType::A),
    ("www.ext.example.com", RecordType::A),
    // The RRset that must truncate.
    ("big.example.com", RecordType::TXT),
    // Outside the zones.
    ("example.net", RecordType::A),
];

/// Where meridian answers differently from Knot on purpose: (name, type, why). These are asked
/// of both and printed, not compared.
const DIFFERENCES: &[(&str, RecordType, &str)] = &[
    (
        "cchild.example.com",
        RecordType::A,
        "a CNAME into another zone we serve is followed there (RFC 1034 §4.3.2 step 3a restarts at \
         step 1, which picks the zone); Knot stays in the first zone and refers to the child",
    ),
    (
        "example.com",
        RecordType::ANY,
        "both answer ANY with one RRset (RFC 8482 §4.1): meridian the first of the zone file \
         (the SOA here), Knot the NS",
    ),
];

/// One reply, reduced to what is compared.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    rcode: String,
    aa: bool,
    tc: bool,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    opt: Option<u16>,
}

fn records(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name.to_ascii().to_ascii_lowercase(),
                r.ttl,
                r.record_type(),
                r.data
            )
            .to_ascii_lowercase()
        })
        .collect();
    out.sort();
    out
}

fn reduce(reply: &Message) -> Answer {
    Answer {
        rcode: reply.metadata.response_code.to_string(),
        aa: reply.metadata.authoritative,
        tc: reply.metadata.truncation,
        answer: records(&reply.answers),
        authority: records(&reply.authorities),
        additional: records(&reply.additionals),
        opt: reply.edns.as_ref().map(|edns| edns.max_payload()),
    }
}

/// `name` in master file syntax (`\\.`, `\\\\`, `\\DDD` escapes), as a name of those octets.
fn presentation_name(name: &str) -> Name {
    let mut labels: Vec<Vec<u8>> = vec![Vec::new()];
    let mut bytes = name.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'.' => labels.push(Vec::new()),
            b'\\' => {
                let first = bytes.next().expect("an escaped character");
                let octet = if first.is_ascii_digit() {
                    let digits = [first, bytes.next().unwrap(), bytes.next().unwrap()];
                    std::str::from_utf8(&digits).unwrap().parse().unwrap()
                } else {
                    first
                };
                labels.last_mut().unwrap().push(octet);
            }
            _ => labels.last_mut().unwrap().push(b),
        }
    }
    let mut name = Name::from_labels(labels).expect("a valid name");
    name.set_fqdn(true);
    name
}

/// The forms each question is asked in: UDP without EDNS, UDP with EDNS (1232), TCP.
fn forms(name: &str, qtype: RecordType) -> [(&'static str, Ask); 3] {
    let ask = || Ask::name(presentation_name(name), qtype);
    [
        ("udp", ask()),
        ("udp+edns", ask().edns(1232)),
        ("tcp", ask().edns(1232)),
    ]
}

async fn ask(server: SocketAddr, form: &str, ask: &Ask) -> Answer {
    let bytes = match form {
        "tcp" => client::send_tcp(server, &ask.to_bytes()).await,
        _ => client::send_udp(server, &ask.to_bytes()).await,
    };
    reduce(&client::decode(&bytes))
}

/// `knotd` serving the conformance zones on a loopback port, stopped on drop.
struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// Starts `knotd` when it is installed.
    async fn start() -> Option<Knot> {
        let knotd = ["/usr/sbin/knotd", "/usr/local/sbin/knotd"]
            .into_iter()
            .map(Path::new)
            .find(|path| path.exists())?;
        let dir = tempfile::tempdir().expect("a directory for knotd");
        // A free port for UDP and TCP: bind both on port 0 to find one, then let knotd have it.
        let port = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
            let port = udp.local_addr().expect("address").port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let zones = zone_dir();
        let (run, zones) = (dir.path().display(), zones.display());
        let mut conf = vec![
            "server:".to_owned(),
            format!("  listen: 127.0.0.1@{port}"),
            format!("  rundir: {run}"),
            "  udp-workers: 1".to_owned(),
            "  tcp-workers: 1".to_owned(),
            "  background-workers: 1".to_owned(),
            "database:".to_owned(),
            format!("  storage: {run}/db"),
            "log:".to_owned(),
            "  - target: stderr".to_owned(),
            "    any: error".to_owned(),
            "zone:".to_owned(),
        ];
        for zone in ["example.com", "child.example.com"] {
            conf.extend([
                format!("  - domain: {zone}"),
                format!("    file: {zones}/{zone}.zone"),
                "    journal-content: none".to_owned(),
                "    zonefile-sync: -1".to_owned(),
            ]);
        }
        let conf = conf.join("\n") + "\n";
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).expect("write knot.conf");
        let child = Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start knotd");
        let mut knot = Knot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        // Ready when both zones answer.
        let started = Instant::now();
        loop {
            let mut ready = true;
            for zone in ["example.com", "child.example.com"] {
                ready &= serves(knot.addr, zone).await;
            }
            if ready {
                return Some(knot);
            }
            let exited = knot.child.try_wait().expect("knotd's status");
            assert!(exited.is_none(), "knotd exited: {exited:?}");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "knotd did not serve the conformance zones within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether `addr` answers `zone SOA` with one record within 200 ms (errors while the server
/// starts, such as a refused port, are a no).
async fn serves(addr: SocketAddr, zone: &str) -> bool {
    let probe = async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
        socket.connect(addr).await.ok()?;
        socket
            .send(&Ask::new(zone, RecordType::SOA).to_bytes())
            .await
            .ok()?;
        let mut buf = vec![0; 4096];
        let len = socket.recv(&mut buf).await.ok()?;
        Message::from_vec(&buf[..len]).ok()
    };
    tokio::time::timeout(Duration::from_millis(200), probe)
        .await
        .ok()
        .flatten()
        .is_some_and(|reply| reply.answers.len() == 1)
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn answers_match_knot_serving_the_same_zones() {
    let Some(knot) = Knot::start().await else {
        eprintln!("knotd is not installed: the comparison with Knot DNS is skipped");
        return;
    };
    let server = meridian().await;
    let mut differ = Vec::new();
    let mut compared = 0;
    for &(name, qtype) in QUESTIONS {
        for (form, query) in forms(name, qtype) {
            let ours = ask(server.udp, form, &query).await;
            let theirs = ask(knot.addr, form, &query).await;
            if let Some((_, _, why)) = DIFFERENCES
                .iter()
                .find(|(n, t, _)| *n == name && *t == qtype)
            {
                eprintln!(
                    "{name} {qtype} ({form}) differs on purpose: {why}\n  meridian {ours:?}\n  knot     {theirs:?}"
                );
                continue;
            }
            compared += 1;
            if ours != theirs {
                differ.push(format!(
                    "{name} {qtype} ({form}):\n  meridian {ours:?}\n  knot     {theirs:?}"
                ));
            }
        }
    }
    assert!(compared > 200, "{compared} answers compared");
    assert!(
        differ.is_empty(),
        "{} of {compared} answers differ from Knot's:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

/// The SOA of the parent zone as negative answers carry it (TTL: the SOA's minimum, 300).
const SOA: &str = "example.com. 300 soa ns1.example.com. hostmaster.example.com. 2026112901 7200 3600 1209600 300";

/// An exact answer: (name, type, rcode, AA, answer, authority, additional).
type Expected = (
    &'static str,
    RecordType,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// Exact answers (as Knot gives them, found with the comparison above) that meridian must give
/// with or without Knot installed: UDP with EDNS 1232.
#[tokio::test]
async fn exact_answers_without_knot() {
    let server = meridian().await;
    let cases: &[Expected] = &[
        // (name, type, rcode, AA, answer, authority, additional)
        (
            "x.wcwild.example.com",
            RecordType::A,
            "No Error",
            true,
            &[
                "x.wcwild.example.com. 3600 cname y.wild.example.com.",
                "y.wild.example.com. 3600 a 192.0.2.100",
            ],
            &[],
            &[],
        ),
        (
            "cdn.example.com",
            RecordType::A,
            "No Error",
            true,
            &[
                "cdn.example.com. 3600 cname x.dn.example.com.",
                // The test client decodes DNAME and DS as opaque data, printed in base32.
                "dn.example.com. 3600 dname b2r0yxjnzxqhzxhhbxbszqnjb20a",
                "x.dn.example.com. 3600 cname x.dtarget.example.com.",
                "x.dtarget.example.com. 3600 a 192.0.2.104",
            ],
            &[],
            &[],
        ),
        (
            "cnx.example.com",
            RecordType::A,
            "Non-Existent Domain",
            true,
            &["cnx.example.com. 3600 cname nothere.example.com."],
            &[SOA],
            &[],
        ),
        (
            "x.wloop.example.com",
            RecordType::A,
            "No Error",
            true,
            &[
                "x.wloop.example.com. 3600 cname z.wloop.example.com.",
                "z.wloop.example.com. 3600 cname z.wloop.example.com.",
            ],
            &[],
            &[],
        ),
        (
            "b.c.ent.example.com",
            RecordType::A,
            "No Error",
            true,
            &[],
            &[SOA],
            &[],
        ),
        (
            "www.deleg.example.com",
            RecordType::A,
            "No Error",
            false,
            &[],
            &[
                "deleg.example.com. 3600 ns ns.deleg.example.com.",
                "deleg.example.com. 3600 ns ns.example.org.",
                "deleg.example.com. 3600 ns ns.other.example.com.",
            ],
            &[
                "ns.deleg.example.com. 3600 a 192.0.2.210",
                "ns.deleg.example.com. 3600 aaaa 2001:db8::210",
                "ns.other.example.com. 3600 a 192.0.2.211",
            ],
        ),
        (
            "child.example.com",
            RecordType::DS,
            "No Error",
            true,
            &["child.example.com. 3600 ds mdknaqurq6urq6urq6urq6urq6urq6urq6urq6urq6urq6ur"],
            &[],
            &[],
        ),
        (
            "x.wmx.example.com",
            RecordType::MX,
            "No Error",
            true,
            &["x.wmx.example.com. 3600 mx 10 mail.example.com."],
            &[],
            &[
                "mail.example.com. 3600 a 192.0.2.25",
                "mail.example.com. 3600 aaaa 2001:db8::25",
            ],
        ),
        (
            "big.example.com",
            RecordType::TXT,
            "No Error",
            true,
            &[],
            &[],
            &[],
        ),
    ];
    let mut wrong = Vec::new();
    for &(name, qtype, rcode, aa, answer, authority, additional) in cases {
        let query = Ask::name(presentation_name(name), qtype).edns(1232);
        let got = ask(server.udp, "udp+edns", &query).await;
        let sorted = |records: &[&str]| {
            let mut records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
            records.sort();
            records
        };
        let expected = Answer {
            rcode: rcode.to_owned(),
            aa,
            tc: name == "big.example.com",
            answer: sorted(answer),
            authority: sorted(authority),
            additional: sorted(additional),
            opt: Some(1232),
        };
        if got != expected {
            wrong.push(format!(
                "{name} {qtype}:\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
