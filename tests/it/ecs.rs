//! Routing by EDNS Client Subnet (RFC 7871) through real sockets, against the fixture database:
//! which datacenter each client network gets, the scope the reply claims, IPv6 clients, unlocated
//! clients, and the malformed and opt-out forms of the option.
//!
//! The fixture's networks (tests/common/mmdb_fixture.rs) and the example datacenters give:
//! GB → eu-west, AU and SG → ap-south, Mountain View → us-west, US by country only → us-east,
//! BR → sa-east, and anything unplaced → the configured order's first, us-east.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::client::{Ask, a_records, aaaa_records, parse_subnet, reply_ecs};
use crate::support::TestServer;

const US_EAST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const US_WEST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const EU_WEST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const AP_SOUTH: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 4);
const SA_EAST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 5);

/// Asks `www.example.com A` for `subnet` and checks the routed address, that the option is
/// echoed (family, source prefix, address) and the scope it claims.
async fn check(server: &TestServer, subnet: &str, expected: Ipv4Addr, scope: u8) {
    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs(subnet)
        .udp(server.udp)
        .await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{subnet}"
    );
    assert_eq!(a_records(&reply), [expected], "{subnet}");
    assert_echo(&reply, subnet, scope);
}

/// RFC 7871 §7.2.1: family, source prefix and address come back as sent, with our scope.
#[track_caller]
fn assert_echo(reply: &Message, subnet: &str, scope: u8) {
    let (addr, source) = parse_subnet(subnet);
    let ecs = reply_ecs(reply).unwrap_or_else(|| panic!("{subnet}: no ECS in the reply"));
    assert_eq!(ecs.addr(), addr, "{subnet}: address echoed");
    assert_eq!(
        ecs.addr().is_ipv4(),
        addr.is_ipv4(),
        "{subnet}: family echoed"
    );
    assert_eq!(
        ecs.source_prefix(),
        source,
        "{subnet}: source prefix echoed"
    );
    assert_eq!(ecs.scope_prefix(), scope, "{subnet}: scope");
}

#[tokio::test]
async fn routes_each_client_network_to_its_nearest_datacenter() {
    let server = TestServer::example().await;
    #[rustfmt::skip]
    let cases = [
        ("81.2.69.0/24",    EU_WEST),  // London
        ("1.128.0.0/24",    AP_SOUTH), // Sydney
        ("8.8.8.0/24",      US_WEST),  // Mountain View
        ("3.3.3.0/24",      US_EAST),  // United States, country-only record: Washington
        ("200.160.0.0/24",  SA_EAST),  // São Paulo
    ];
    for (subnet, expected) in cases {
        let reply = Ask::new("www.example.com", RecordType::A)
            .ecs(subnet)
            .udp(server.udp)
            .await;
        assert_eq!(a_records(&reply), [expected], "{subnet}");
        assert_eq!(reply.answers[0].ttl, 30, "{subnet}");
        assert!(reply.metadata.authoritative, "{subnet}");
    }

    // The same decision for AAAA, from the same pool.
    for (subnet, expected) in [
        ("81.2.69.0/24", "2001:db8::3"),
        ("1.128.0.0/24", "2001:db8::4"),
        ("200.160.0.0/24", "2001:db8::5"),
    ] {
        let reply = Ask::new("www.example.com", RecordType::AAAA)
            .ecs(subnet)
            .udp(server.udp)
            .await;
        let expected: Ipv6Addr = expected.parse().unwrap();
        assert_eq!(aaaa_records(&reply), [expected], "{subnet}");
    }
}

#[tokio::test]
async fn scope_is_the_widest_network_with_the_same_answer() {
    let server = TestServer::example().await;
    // Unplaced space answers the configured order's first, us-east; so does the US record.
    #[rustfmt::skip]
    let cases = [
        // The database network, when its neighbours answer otherwise (81.2.68.0/24 and
        // 8.8.9.0/24 are unplaced: us-east).
        ("81.2.69.0/24",     EU_WEST,  24),
        ("8.8.8.0/24",       US_WEST,  24),
        // The database network is shorter than the source: the network's length, so a
        // resolver may reuse the answer for the whole network.
        ("1.128.0.0/24",     AP_SOUTH, 16), // 1.128.0.0/16
        ("1.128.200.0/24",   AP_SOUTH, 16),
        ("200.160.0.0/24",   SA_EAST,  20), // 200.160.0.0/20
        // Wider than the database network where the neighbours answer the same: 3.0.0.0/8
        // (US) and 2.0.0.0/8 (unplaced) are both us-east, so 2.0.0.0/7 is one answer.
        ("3.3.3.0/24",       US_EAST,  7),
        // The source is longer than the database network: still the network.
        ("81.2.69.128/25",   EU_WEST,  24),
        ("1.128.7.0/28",     AP_SOUTH, 16),
        // The source is shorter than the database network: RFC 7871 §7.2.1 has the scope
        // longer than the source, because the answer holds only for part of the source network.
        ("1.128.0.0/12",     AP_SOUTH, 16),
        ("200.160.0.0/16",   SA_EAST,  20),
    ];
    for (subnet, expected, scope) in cases {
        check(&server, subnet, expected, scope).await;
    }
}

/// A datacenter without AAAA addresses passes AAAA answers on to the next, so the decision map
/// of an IPv4-only service ranks every datacenter, not only the one answered. Its A scopes are
/// still those of the same service with AAAA everywhere (the widest networks of the same A
/// record, whatever the order of the other datacenters), and its AAAA answer is NODATA for
/// every client: scope 0.
#[tokio::test]
async fn a_family_no_pool_has_leaves_the_other_familys_scopes_as_wide() {
    let mut config = crate::support::CONFIG.to_owned();
    for dc in 1..=5 {
        let aaaa = format!(", aaaa: [\"2001:db8::{dc}\"]");
        assert!(config.contains(&aaaa), "{aaaa}");
        config = config.replace(&aaaa, "");
    }
    let server = TestServer::start(&config, crate::support::ZONE).await;
    #[rustfmt::skip]
    let cases = [
        ("81.2.69.0/24",   EU_WEST,  24),
        ("1.128.0.0/24",   AP_SOUTH, 16),
        ("200.160.0.0/24", SA_EAST,  20),
        // 3.0.0.0/8 (US) and 2.0.0.0/8 (unplaced) rank the other datacenters differently, but
        // both answer us-east.
        ("3.3.3.0/24",     US_EAST,  7),
    ];
    for (subnet, expected, scope) in cases {
        check(&server, subnet, expected, scope).await;
        let reply = Ask::new("www.example.com", RecordType::AAAA)
            .ecs(subnet)
            .udp(server.udp)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{subnet}"
        );
        assert!(reply.answers.is_empty(), "{subnet}: NODATA");
        assert_echo(&reply, subnet, 0);
    }
}

#[tokio::test]
async fn static_and_negative_answers_have_scope_zero() {
    let server = TestServer::example().await;
    // Nothing about these answers depends on the client, so any resolver may share them.
    for (name, qtype) in [
        ("ns1.example.com", RecordType::A),
        ("www.example.com", RecordType::TXT),
        ("www.example.com", RecordType::MX),
        ("nope.example.com", RecordType::A),
    ] {
        let reply = Ask::new(name, qtype)
            .ecs("81.2.69.0/24")
            .udp(server.udp)
            .await;
        assert_echo(&reply, "81.2.69.0/24", 0);
    }
}

#[tokio::test]
async fn source_prefix_zero_routes_the_resolver_with_scope_zero() {
    let server = TestServer::example().await;
    // RFC 7871 §7.1.2: /0 asks for an answer not tailored to the client. The resolver here is
    // 127.0.0.1, which the database cannot place: the configured order's first, us-east.
    check(&server, "0.0.0.0/0", US_EAST, 0).await;
    check(&server, "::/0", US_EAST, 0).await;
}

#[tokio::test]
async fn host_bits_past_the_source_prefix_get_formerr() {
    let server = TestServer::example().await;
    // 81.2.69.0/20 sends 81.2.69 with bits set past /20 (69 = 0b0100_0101): RFC 7871 §6 says
    // such an option SHOULD get FORMERR.
    for subnet in ["81.2.69.0/20", "1.128.0.0/7", "2a02:8801::/31"] {
        let reply = Ask::new("www.example.com", RecordType::A)
            .ecs(subnet)
            .udp(server.udp)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{subnet}"
        );
        assert!(reply.answers.is_empty(), "{subnet}");
    }
    // The same network with its host bits cleared is fine. 81.2.64.0 itself is not in the
    // database (81.2.64.0/22 is empty), so it gets the configured order for that /22: the /20
    // holds the GB network, which answers otherwise.
    check(&server, "81.2.64.0/20", US_EAST, 22).await;
}

/// `www.example.com A` with an OPT record whose only option is ECS family 1, source prefix
/// `source`, scope 0, and exactly the address octets `address`.
fn raw_ecs_query(source: u8, address: &[u8]) -> Vec<u8> {
    let mut message = vec![0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["www", "example", "com"] {
        message.push(u8::try_from(label.len()).unwrap());
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    let option_len = 4 + address.len();
    message.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    message.extend_from_slice(&u16::try_from(4 + option_len).unwrap().to_be_bytes());
    message.extend_from_slice(&[0, 8]);
    message.extend_from_slice(&u16::try_from(option_len).unwrap().to_be_bytes());
    message.extend_from_slice(&[0, 1, source, 0]);
    message.extend_from_slice(address);
    message
}

#[tokio::test]
async fn ecs_addresses_longer_than_their_prefix_get_formerr() {
    let server = TestServer::example().await;
    // RFC 7871 §6: ADDRESS "MUST NOT contain any more octets than needed"; a /24 needs three.
    for (source, address, rcode) in [
        (24, &[81, 2, 69][..], ResponseCode::NoError),
        (24, &[81, 2, 69, 0][..], ResponseCode::FormErr),
        (20, &[81, 2, 64, 0][..], ResponseCode::FormErr),
        (0, &[0][..], ResponseCode::FormErr),
        (0, &[][..], ResponseCode::NoError),
    ] {
        let bytes = crate::client::send_udp(server.udp, &raw_ecs_query(source, address)).await;
        let reply = crate::client::decode(&bytes);
        let what = format!("/{source} with {} octets", address.len());
        assert_eq!(reply.metadata.id, 0xbeef, "{what}");
        assert_eq!(reply.metadata.response_code, rcode, "{what}");
        assert_eq!(reply.queries.len(), 1, "{what}: the question is kept");
        assert!(reply.edns.is_some(), "{what}: an OPT record");
        if rcode == ResponseCode::FormErr {
            assert!(reply.answers.is_empty(), "{what}");
        }
    }
}

#[tokio::test]
async fn no_ecs_in_the_query_means_none_in_the_reply() {
    let server = TestServer::example().await;
    let reply = Ask::new("www.example.com", RecordType::A)
        .edns(1232)
        .udp(server.udp)
        .await;
    assert!(reply.edns.is_some(), "OPT answered with OPT");
    assert!(reply_ecs(&reply).is_none(), "no ECS without ECS");
    assert_eq!(
        a_records(&reply),
        [US_EAST],
        "the resolver's own address is routed"
    );
}

#[tokio::test]
async fn ipv6_client_subnets_are_routed() {
    let server = TestServer::example().await;
    #[rustfmt::skip]
    let cases = [
        ("2a02:8800::/48",   EU_WEST,  32), // GB, 2a02:8800::/32
        ("2400:cb00::/48",   AP_SOUTH, 32), // SG, 2400:cb00::/32
        ("2400:cb00:1::/64", AP_SOUTH, 32),
        // US by country only, 2600:1f00::/24; the rest of 2600::/7 is unplaced (us-east too).
        ("2600:1f00::/48",   US_EAST,  7),
        // Shorter than the database network: the scope is the network (RFC 7871 §7.2.1).
        ("2a02:8800::/24",   EU_WEST,  32),
    ];
    for (subnet, expected, scope) in cases {
        check(&server, subnet, expected, scope).await;
    }
    let reply = Ask::new("www.example.com", RecordType::AAAA)
        .ecs("2a02:8800::/48")
        .udp(server.udp)
        .await;
    assert_eq!(
        aaaa_records(&reply),
        ["2001:db8::3".parse::<Ipv6Addr>().unwrap()]
    );
}

#[tokio::test]
async fn ipv4_mapped_subnet_is_routed_as_ipv4_with_its_scope_in_ipv6_bits() {
    let server = TestServer::example().await;
    // ::ffff:81.2.69.0/120 is 81.2.69.0/24; the scope is given back in the option's family:
    // the /24 database network is /120 there.
    check(&server, "::ffff:81.2.69.0/120", EU_WEST, 120).await;
    check(&server, "::ffff:1.128.0.0/120", AP_SOUTH, 112).await;
}

#[tokio::test]
async fn queries_to_the_ipv6_listener_are_answered() {
    let server = TestServer::example().await;
    let reply = Ask::new("www.example.com", RecordType::A)
        .udp(server.udp6)
        .await;
    // ::1 cannot be placed: the configured order's first.
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply), [US_EAST]);

    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(server.udp6)
        .await;
    assert_eq!(a_records(&reply), [EU_WEST]);
    assert_echo(&reply, "81.2.69.0/24", 24);
}

#[tokio::test]
async fn unlocated_clients_get_the_configured_order() {
    let server = TestServer::example().await;
    // A private network, and a network whose record names no known country.
    for subnet in ["10.0.0.0/8", "198.51.100.0/24", "192.168.1.0/24"] {
        let reply = Ask::new("www.example.com", RecordType::A)
            .ecs(subnet)
            .udp(server.udp)
            .await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{subnet}"
        );
        assert!(reply.metadata.authoritative, "{subnet}");
        assert_eq!(a_records(&reply), [US_EAST], "{subnet}");
        let (_, source) = parse_subnet(subnet);
        let ecs = reply_ecs(&reply).expect("ECS echoed");
        assert!(
            ecs.scope_prefix() <= source,
            "{subnet}: unplaced space is wide, the scope within the source prefix"
        );
    }
    // 198.51.100.0/24 is an unplaceable record and nothing else in 192.0.0.0/5 is placed: the
    // answer holds for all of that /5.
    check(&server, "198.51.100.0/24", US_EAST, 5).await;
}

#[tokio::test]
async fn the_ecs_address_wins_over_the_resolver_address() {
    let server = TestServer::example().await;
    // The same resolver (127.0.0.1) asking for different clients gets different answers.
    let mut seen = Vec::new();
    for subnet in ["81.2.69.0/24", "1.128.0.0/24", "8.8.8.0/24"] {
        let reply = Ask::new("www.example.com", RecordType::A)
            .ecs(subnet)
            .udp(server.udp)
            .await;
        seen.push(a_records(&reply)[0]);
    }
    assert_eq!(seen, [EU_WEST, AP_SOUTH, US_WEST]);
}
