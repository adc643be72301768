//! The fast path's invariant: whenever it answers, its bytes are the general path's.
//!
//! A property test generates queries of every shape the fast path might recognise and many it
//! must not (names in mixed case, every type, with and without EDNS, every payload size, ECS
//! for IPv4, IPv6 and IPv4-mapped addresses with every prefix, DO, cookies, NSID, odd header
//! bits, another class or opcode or version) against the shipped example and a zone with every
//! kind of name (CNAME chains, wildcards, delegations, DNAMEs, empty non-terminals, answers too
//! large for 512 octets), and services whose addresses rotate, and compares both paths'
//! replies.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;

use crate::config::Source;
use crate::dns::Snapshot;

use super::super::rotation::next_query;
use super::both_paths;

const ZONE: &str = r#"$ORIGIN fast.test.
$TTL 300
@        IN SOA  ns1.fast.test. hostmaster.fast.test. 1 7200 3600 1209600 60
@        IN NS   ns1.fast.test.
@        IN NS   ns2.elsewhere.example.
@        IN MX   10 mail.fast.test.
@        IN TXT  "apex"
ns1      IN A    192.0.2.53
mail     IN A    192.0.2.25
mail     IN AAAA 2001:db8::25
multi    IN A    192.0.2.1
multi    IN A    192.0.2.2
multi    IN A    192.0.2.3
alias    IN CNAME mail.fast.test.
chain    IN CNAME alias.fast.test.
away     IN CNAME www.elsewhere.example.
to-geo   IN CNAME geo.fast.test.
*.wild   IN A    192.0.2.99
sub      IN NS   ns.sub.fast.test.
ns.sub   IN A    192.0.2.77
old      IN DNAME new.elsewhere.example.
a.b.deep IN TXT  "deep"
geo      IN TXT  "routed"
srv      IN SRV  0 5 443 mail.fast.test.
big      IN TXT  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
big      IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
big      IN TXT  "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
big      IN TXT  "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
big      IN TXT  "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
"#;

/// Names to ask for: every kind of name in both zones, and names that do not exist.
const NAMES: &[&str] = &[
    "www.example.com.",
    "api.example.com.",
    "example.com.",
    "ns1.example.com.",
    "mail.example.com.",
    "api-docs.example.com.",
    "nope.example.com.",
    "a.b.nope.example.com.",
    "users.example.com.",
    "alice.users.example.com.",
    "_explain.www.example.com.",
    "fast.test.",
    "ns1.fast.test.",
    "mail.fast.test.",
    "multi.fast.test.",
    "alias.fast.test.",
    "chain.fast.test.",
    "away.fast.test.",
    "to-geo.fast.test.",
    "geo.fast.test.",
    "both.fast.test.",
    "spin.fast.test.",
    "dice.fast.test.",
    "x.wild.fast.test.",
    "wild.fast.test.",
    "sub.fast.test.",
    "x.sub.fast.test.",
    "ns.sub.fast.test.",
    "old.fast.test.",
    "x.old.fast.test.",
    "deep.fast.test.",
    "b.deep.fast.test.",
    "a.b.deep.fast.test.",
    "x.a.b.deep.fast.test.",
    "nope.fast.test.",
    "x.y.z.fast.test.",
    "srv.fast.test.",
    "big.fast.test.",
    "www.elsewhere.example.",
    ".",
];

/// Query types: the common ones, the special ones, and any number.
fn qtype() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![
            1u16, 2, 5, 6, 12, 15, 16, 28, 33, 35, 39, 43, 46, 47, 48, 64, 65, 99, 251, 252, 255,
            257, 0,
        ]),
        1 => any::<u16>(),
    ]
}

/// An EDNS option: ECS (well formed or not), NSID, a cookie, or something else.
fn option() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        4 => (0u8..=32, any::<u32>(), any::<u8>()).prop_map(|(prefix, addr, scope)| {
            let addr = u32::checked_shl(u32::MAX, 32 - u32::from(prefix)).unwrap_or(0) & addr;
            ecs(1, prefix, scope, &addr.to_be_bytes())
        }),
        3 => (0u8..=128, any::<u128>()).prop_map(|(prefix, addr)| {
            let addr = u128::checked_shl(u128::MAX, 128 - u32::from(prefix)).unwrap_or(0) & addr;
            ecs(2, prefix, 0, &addr.to_be_bytes())
        }),
        1 => (96u8..=128, any::<u32>()).prop_map(|(prefix, v4)| {
            // IPv4-mapped IPv6.
            let addr = Ipv4Addr::from(v4).to_ipv6_mapped().to_bits();
            let addr = u128::checked_shl(u128::MAX, 128 - u32::from(prefix)).unwrap_or(0) & addr;
            ecs(2, prefix, 0, &addr.to_be_bytes())
        }),
        1 => (0u8..=40, any::<u128>(), 0usize..=17).prop_map(|(prefix, addr, len)| {
            // Malformed: any prefix, any address, any length.
            let bytes = addr.to_be_bytes();
            ecs(1 + (prefix % 3) as u16, prefix, 0, &bytes[..len.min(16)])
        }),
        2 => Just((3u16, Vec::new())),
        1 => Just((3u16, vec![1])),
        2 => prop::collection::vec(any::<u8>(), 8..=8).prop_map(|c| (10u16, c)),
        1 => prop::collection::vec(any::<u8>(), 0..=44).prop_map(|c| (10u16, c)),
        1 => (any::<u16>(), prop::collection::vec(any::<u8>(), 0..=8)),
    ]
}

fn ecs(family: u16, prefix: u8, scope: u8, addr: &[u8]) -> (u16, Vec<u8>) {
    let len = usize::from(prefix).div_ceil(8).min(addr.len());
    let mut data = family.to_be_bytes().to_vec();
    data.extend_from_slice(&[prefix, scope]);
    data.extend_from_slice(&addr[..len]);
    (8, data)
}

/// An OPT record: payload size, DO, version, options.
#[derive(Debug, Clone)]
struct Opt {
    payload: u16,
    flags: u16,
    version: u8,
    options: Vec<(u16, Vec<u8>)>,
}

fn opt() -> impl Strategy<Value = Opt> {
    (
        prop_oneof![
            Just(512u16),
            Just(1232),
            Just(4096),
            Just(0),
            0u16..2048,
            any::<u16>()
        ],
        prop_oneof![Just(0u16), Just(0x8000), any::<u16>()],
        prop_oneof![9 => Just(0u8), 1 => any::<u8>()],
        prop::collection::vec(option(), 0..=3),
    )
        .prop_map(|(payload, flags, version, options)| Opt {
            payload,
            flags,
            version,
            options,
        })
}

/// A query message as a client writes it.
#[derive(Debug, Clone)]
struct Query {
    id: u16,
    flags: u16,
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    opt: Option<Opt>,
}

impl Query {
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.flags.to_be_bytes());
        bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(self.opt.is_some())]);
        bytes.extend_from_slice(&self.name);
        bytes.extend_from_slice(&self.qtype.to_be_bytes());
        bytes.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some(opt) = &self.opt {
            bytes.push(0);
            bytes.extend_from_slice(&41u16.to_be_bytes());
            bytes.extend_from_slice(&opt.payload.to_be_bytes());
            bytes.extend_from_slice(&[0, opt.version]);
            bytes.extend_from_slice(&opt.flags.to_be_bytes());
            let data: Vec<u8> = opt
                .options
                .iter()
                .flat_map(|(code, data)| {
                    let mut option = code.to_be_bytes().to_vec();
                    option.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    option.extend_from_slice(data);
                    option
                })
                .collect();
            bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&data);
        }
        bytes
    }
}

/// `name` in wire form, each letter in the case `upper` says.
fn wire_name(name: &str, upper: &[bool]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut i = 0;
    for label in name.split('.').filter(|label| !label.is_empty()) {
        bytes.push(label.len() as u8);
        for byte in label.bytes() {
            let flip = upper.get(i % upper.len().max(1)).copied().unwrap_or(false);
            bytes.push(if flip {
                byte.to_ascii_uppercase()
            } else {
                byte
            });
            i += 1;
        }
    }
    bytes.push(0);
    bytes
}

fn query() -> impl Strategy<Value = Query> {
    (
        any::<u16>(),
        // QR clear, opcode QUERY mostly; every other header bit at random.
        prop_oneof![8 => any::<u16>().prop_map(|f| f & 0x07FF), 1 => any::<u16>()],
        prop::sample::select(NAMES),
        prop::collection::vec(any::<bool>(), 1..8),
        qtype(),
        prop_oneof![9 => Just(1u16), 1 => prop::sample::select(vec![3u16, 4, 254, 255])],
        prop::option::weighted(0.8, opt()),
    )
        .prop_map(|(id, flags, name, upper, qtype, qclass, opt)| Query {
            id,
            flags,
            name: wire_name(name, &upper),
            qtype,
            qclass,
            opt,
        })
}

fn source() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
        (any::<u128>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
        Just(SocketAddr::from(([127, 0, 0, 1], 5353))),
    ]
}

/// The shipped example with a second zone, `fast.test`, and two services in it.
fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("meridian-fast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fast.test.zone"), ZONE).unwrap();
        std::fs::copy(
            root.join("zones/example.com.zone"),
            dir.join("example.com.zone"),
        )
        .unwrap();
        let example = std::fs::read_to_string(root.join("zones/example.yaml")).unwrap();
        let geo = root.join("geodata/geo-whois-asn-country.mmdb");
        let config = example
            .replace(
                "../geodata/geo-whois-asn-country.mmdb",
                &geo.display().to_string(),
            )
            .replace(
                "zones:\n",
                "zones:\n  - origin: fast.test\n    file: fast.test.zone\n",
            )
            .replace(
                "services:\n",
                "services:\n  geo:\n    name: geo.fast.test\n    policy: nearest\n    ttl: 20\n    \
                 order: [eu-west, us-east]\n    pools:\n      eu-west: { a: [192.0.2.3] }\n      \
                 us-east: { a: [192.0.2.1] }\n  both:\n    name: both.fast.test\n    \
                 policy: nearest\n    ttl: 20\n    answers: 2\n    order: [ap-south, sa-east]\n    \
                 pools:\n      ap-south: { a: [192.0.2.4], aaaa: [\"2001:db8::4\"] }\n      \
                 sa-east: { aaaa: [\"2001:db8::5\"] }\n  spin:\n    name: spin.fast.test\n    \
                 policy: nearest\n    rotation: cyclic\n    answers: 2\n    order: [eu-west, us-east]\n    \
                 pools:\n      eu-west: { a: [192.0.2.10, 192.0.2.11, 192.0.2.12], aaaa: [\"2001:db8::10\", \"2001:db8::11\"] }\n      \
                 us-east: { a: [192.0.2.20, 192.0.2.21], aaaa: [\"2001:db8::20\"] }\n  dice:\n    \
                 name: dice.fast.test\n    policy: nearest\n    rotation: random\n    order: [us-east, eu-west]\n    \
                 pools:\n      eu-west: { a: [192.0.2.30, 192.0.2.31], aaaa: [\"2001:db8::30\", \"2001:db8::31\", \"2001:db8::32\"] }\n      \
                 us-east: { a: [192.0.2.40, 192.0.2.41, 192.0.2.42] }\n",
            );
        let path: PathBuf = dir.join("meridian.yaml");
        std::fs::write(&path, config).unwrap();
        let snapshot = Snapshot::load(&Source::File(path), 1).expect("test configuration");
        std::fs::remove_dir_all(&dir).ok();
        // A fleet's revision, which both paths write into NSID.
        let live = crate::state::LiveState {
            revision: 4711,
            ..crate::state::LiveState::default()
        };
        Snapshot::assemble(
            snapshot.loaded.clone(),
            std::sync::Arc::new(live),
            None,
            1,
            snapshot.built_at,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn fast_path_bytes_are_the_general_paths(query in query(), src in source(), turns in 0..4usize) {
        // Rotating services answer in another order after each query: both paths must take
        // the same one, whichever it is.
        for _ in 0..turns {
            next_query();
        }
        let bytes = query.bytes();
        let (fast, general) = both_paths(snapshot(), &bytes, src);
        if let Some(fast) = fast {
            prop_assert_eq!(Some(fast), general, "query {:?}", query);
        }
    }

    #[test]
    fn random_bytes_take_the_general_path_or_the_same_answer(
        bytes in prop::collection::vec(any::<u8>(), 0..80),
        src in source(),
    ) {
        let (fast, general) = both_paths(snapshot(), &bytes, src);
        if let Some(fast) = fast {
            prop_assert_eq!(Some(fast), general);
        }
    }
}

/// The property above holds trivially if the fast path answers nothing: these common queries
/// it must answer.
#[test]
fn fast_path_answers_the_common_shapes() {
    let src = SocketAddr::from(([192, 0, 2, 53], 5300));
    let ecs = |addr: [u8; 3]| Opt {
        payload: 1232,
        flags: 0,
        version: 0,
        options: vec![ecs(1, 24, 0, &addr)],
    };
    let plain = Opt {
        payload: 1232,
        flags: 0x8000,
        version: 0,
        options: vec![(3, Vec::new()), (10, vec![7; 8])],
    };
    let cases = [
        ("wWw.example.com.", 1, Some(ecs([81, 2, 69]))),
        ("www.example.com.", 28, Some(ecs([8, 8, 8]))),
        ("geo.fast.test.", 28, Some(ecs([8, 8, 8]))),
        ("both.fast.test.", 1, None),
        ("www.example.com.", 1, Some(plain.clone())),
        ("ns1.example.com.", 1, Some(plain.clone())),
        ("Mail.Fast.Test.", 15, None),
        ("multi.fast.test.", 1, None),
        ("chain.fast.test.", 28, Some(plain.clone())),
        ("nope.example.com.", 1, Some(plain.clone())),
        ("x.y.Fast.test.", 16, None),
        ("ns.sub.fast.test.", 1, None),
    ];
    for (name, qtype, opt) in cases {
        let query = Query {
            id: 7,
            flags: 0x0100,
            name: wire_name(name, &[false]),
            qtype,
            qclass: 1,
            opt,
        };
        let (fast, general) = both_paths(snapshot(), &query.bytes(), src);
        assert!(fast.is_some(), "{name} {qtype}: the fast path declined");
        assert_eq!(fast, general, "{name} {qtype}");
    }
}

/// Rotating services: the fast path answers each order (not just the first), in turn for
/// `cyclic`, each equal to the general path's answer to the same query.
#[test]
fn fast_path_answers_every_order_of_a_rotation() {
    let src = SocketAddr::from(([192, 0, 2, 53], 5300));
    // (name, type, distinct answers expected over the queries)
    let cases = [
        ("spin.fast.test.", 1, 3),
        ("spin.fast.test.", 28, 2),
        ("dice.fast.test.", 1, 3),
        // us-east has no IPv6 address: the AAAA answer is eu-west's.
        ("dice.fast.test.", 28, 3),
    ];
    for (name, qtype, n) in cases {
        let query = Query {
            id: 7,
            flags: 0x0100,
            name: wire_name(name, &[true, false]),
            qtype,
            qclass: 1,
            opt: None,
        };
        let mut answers = Vec::new();
        // 200 queries: `random` misses one of 3 orders with a chance of 3 × (2/3)^200.
        for _ in 0..200 {
            next_query();
            let (fast, general) = both_paths(snapshot(), &query.bytes(), src);
            assert!(fast.is_some(), "{name} {qtype}: the fast path declined");
            assert_eq!(fast, general, "{name} {qtype}");
            answers.push(fast.expect("checked"));
        }
        let mut distinct = answers.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), n, "{name} {qtype}");
        if name.starts_with("spin") {
            // cyclic: the answers repeat with the period of the orders, and no sooner.
            for (i, answer) in answers.iter().enumerate().skip(n) {
                assert_eq!(answer, &answers[i - n], "{name} {qtype} answer {i}");
                assert_ne!(answer, &answers[i - 1], "{name} {qtype} answer {i}");
            }
        }
    }
}
