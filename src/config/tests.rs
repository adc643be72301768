//! Configuration validation: the example is valid, and every kind of problem is reported with
//! its path, all at once.

use super::*;

const VALID: &str = r#"
geo: { database: geo.mmdb }
zones: [{ origin: Example.COM., file: example.com.zone }]
datacenters:
  us-east: { latitude: 39.0, longitude: -77.5, country: us, continent: na }
  eu-west: { latitude: 53.3, longitude: -6.3, country: IE, continent: EU }
services:
  www:
    name: WWW.example.com.
    policy: nearest
    order: [eu-west]
    pools:
      us-east: { a: [192.0.2.1], aaaa: ["2001:db8::1"] }
      eu-west: { a: [192.0.2.3] }
"#;

fn problems(yaml: &str) -> Vec<String> {
    Config::from_yaml_str(yaml)
        .expect_err("configuration should be invalid")
        .problems
        .iter()
        .map(Problem::to_string)
        .collect()
}

#[test]
fn the_shipped_example_is_valid() {
    let config = Config::from_yaml_str(EXAMPLE_CONFIG).expect("example config");
    assert_eq!(config.datacenters.len(), 5);
    assert_eq!(config.services[0].name, "www.example.com");
    assert_eq!(config.services[0].ttl, 30);
}

#[test]
fn defaults_and_normalisation() {
    let config = Config::from_yaml_str(VALID).unwrap();
    assert_eq!(config.server.dns, vec!["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(config.server.max_udp_payload, 1232);
    assert_eq!(config.zones[0].origin, "example.com");
    let www = &config.services[0];
    assert_eq!(www.name, "www.example.com");
    assert_eq!(www.ttl, raw::DEFAULT_SERVICE_TTL);
    assert_eq!(www.answers.get(), 1);
    // The order names eu-west (pool 1) first; the pools it leaves out follow in pool order.
    assert_eq!(www.order, vec![1, 0]);
    assert_eq!(config.datacenters[0].country.as_str(), "US");
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let yaml = r#"
server: { dns: ["127.0.0.1", "[::1]:53"], max_udp_payload: 100 }
geo: { database: geo.mmdb }
zones: [{ origin: "bad..name", file: x.zone }, { origin: example.com, file: example.com.zone }]
datacenters:
  us-east: { latitude: 99.0, longitude: -77.5, country: USA, continent: XX }
  eu-west: { latitude: 53.3, longitude: -6.3, country: IE, continent: EU }
services:
  www:
    name: www.example.org
    policy: closest
    answers: 0
    order: [venus, eu-west, eu-west]
    pools:
      eu-west: { a: [192.0.2.3, 192.0.2.300], aaaa: [192.0.2.1], weight: 0 }
      mars: { a: [192.0.2.9] }
      eu-west-2: {}
"#;
    let got = problems(yaml);
    let expected = [
        "server.dns[0]: \"127.0.0.1\" is not an address with a port",
        "server.max_udp_payload: 100 is below the DNS minimum of 512",
        "zones[0].origin: \"bad..name\": every label must be 1 to 63 characters",
        "datacenters.us-east: latitude 99 / longitude -77.5 out of range",
        "datacenters.us-east.country: \"USA\": not a two-letter ISO 3166-1 country code",
        "datacenters.us-east.continent: \"XX\": not a continent code",
        // Not "services.www.name: not inside any configured zone": with zones[0] invalid, that
        // cannot be known.
        "services.www.policy: unknown policy \"closest\"",
        "services.www.answers: must be at least 1",
        "services.www.pools.eu-west.a[1]: \"192.0.2.300\" is not an IPv4 address",
        "services.www.pools.eu-west.aaaa[0]: \"192.0.2.1\" is not an IPv6 address",
        "services.www.pools.eu-west.weight: must be at least 1",
        "services.www.pools.mars: unknown datacenter \"mars\"",
        "services.www.pools.eu-west-2: unknown datacenter \"eu-west-2\"",
        "services.www.pools.eu-west-2: a pool needs at least one address",
        "services.www.order[0]: \"venus\" is not one of this service's pools",
        "services.www.order[2]: \"eu-west\" is listed twice",
    ];
    for want in expected {
        assert!(
            got.iter().any(|problem| problem.starts_with(want)),
            "missing {want:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected extras:\n{}",
        got.join("\n")
    );
}

#[test]
fn unknown_fields_and_bad_syntax_are_rejected_with_a_location() {
    let got = problems(&VALID.replace("policy: nearest", "policy: nearest\n    colour: blue"));
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("unknown field `colour`"), "{got:?}");
    assert!(
        got[0].starts_with("services") || got[0].starts_with("line "),
        "{got:?}"
    );

    let got = problems("zones: [");
    assert!(got[0].starts_with("line "), "{got:?}");
}

#[test]
fn duplicate_services_and_zones_are_rejected() {
    let yaml = r#"
geo: { database: geo.mmdb }
zones: [{ origin: example.com, file: a.zone }, { origin: EXAMPLE.com., file: b.zone }]
datacenters:
  eu-west: { latitude: 53.3, longitude: -6.3, country: IE, continent: EU }
services:
  www: { name: www.example.com, policy: nearest, pools: { eu-west: { a: [192.0.2.3] } } }
  www2: { name: WWW.example.com, policy: failover, pools: { eu-west: { a: [192.0.2.4] } } }
"#;
    let got = problems(yaml);
    let expected = [
        "zones[1].origin: zone example.com is configured twice",
        "services.www2.name: www.example.com is answered by another service already",
    ];
    assert_eq!(got, expected);
}

#[test]
fn names_are_checked() {
    assert_eq!(normalize_name("Example.COM.").unwrap(), "example.com");
    assert!(normalize_name(".").is_err());
    assert!(normalize_name(&"a".repeat(64)).is_err());
    assert!(normalize_name("bad name.com").is_err());
    assert!(is_in_zone("www.example.com", "example.com"));
    assert!(is_in_zone("example.com", "example.com"));
    assert!(!is_in_zone("badexample.com", "example.com"));
}

/// The problems of `yaml` as text, for tests that compare them whole.
fn all_problems(yaml: &str) -> String {
    problems(yaml).join("\n")
}

#[test]
fn a_name_outside_every_zone_is_reported() {
    let got = problems(&VALID.replace("WWW.example.com.", "www.example.org"));
    assert_eq!(
        got,
        ["services.www.name: www.example.org is not inside any configured zone"]
    );
}

#[test]
fn an_empty_file_lists_every_missing_section() {
    for yaml in ["", "# nothing yet\n", "server: {}\n", "server:\n"] {
        let got = problems(yaml);
        let sections: Vec<&str> = got
            .iter()
            .map(|p| p.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            sections,
            ["geo", "zones", "datacenters"],
            "{yaml:?}: {got:#?}"
        );
        assert!(
            got.iter().all(|p| p.contains("missing section")),
            "{yaml:?}: {got:#?}"
        );
    }
    // Missing sections are listed beside the problems of the sections that are there.
    let got = problems("geo: { database: geo.mmdb }\nserver: { max_udp_payload: 100 }\n");
    assert_eq!(
        got,
        [
            "zones: missing section: at least one zone is needed (zones: [{ origin: NAME, file: FILE }])",
            "datacenters: missing section: at least one datacenter is needed",
            "server.max_udp_payload: 100 is below the DNS minimum of 512",
        ]
    );
}

#[test]
fn a_duplicate_key_is_reported_where_it_is() {
    // At the top level serde_yaml would say "line 1 column 1".
    let got = problems(&format!("{VALID}geo: {{ database: other.mmdb }}\n"));
    assert_eq!(
        got,
        ["geo (line 15 column 1): duplicate key, first defined on line 2"]
    );

    // A datacenter defined twice would otherwise silently replace the first.
    let yaml = VALID.replace(
        "  eu-west: { latitude: 53.3",
        "  us-east: { latitude: 1.0, longitude: 1.0, country: US, continent: NA }\n  eu-west: { latitude: 53.3",
    );
    assert_eq!(
        problems(&yaml),
        ["datacenters.us-east (line 6 column 3): duplicate key, first defined on line 5"]
    );

    // Inside a flow mapping, and inside a list.
    let yaml = VALID
        .replace("country: IE,", "country: IE, country: GB,")
        .replace("file: example.com.zone }", "file: a.zone, file: b.zone }");
    assert_eq!(
        all_problems(&yaml),
        "zones[0].file (line 3 column 47): duplicate key, first defined on line 3\n\
         datacenters.eu-west.country (line 6 column 60): duplicate key, first defined on line 6"
    );
}

#[test]
fn a_location_is_printed_once() {
    let got = problems(&VALID.replace("latitude: 53.3", "latitude: north"));
    assert_eq!(
        got,
        [
            "datacenters.eu-west.latitude (line 6 column 24): invalid type: string \"north\", expected a number"
        ]
    );
    let got = problems("zones: [\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("line 2 column 1: "), "{got:?}");
    assert_eq!(got[0].matches("line").count(), 1, "{got:?}");
}

#[test]
fn one_bad_value_is_one_problem() {
    // A datacenter with a value out of range is named by a pool, the order, a token and the
    // directory: it is reported once, at the datacenter.
    let config = format!(
        "{}{}",
        VALID.replace("latitude: 53.3", "latitude: 153.3"),
        r#"
control:
  tokens:
    - { name: eu, role: "datacenter:eu-west", sha256: 39c53d0bfc485a57d5063f9113aa49600c17c3dc68db6b7441cf07495c495a19 }
directory:
  datacenters: [eu-west]
  frontends:
    eu-west: { a: [192.0.2.103] }
"#
    );
    assert_eq!(
        all_problems(&config),
        "datacenters.eu-west: latitude 153.3 / longitude -6.3 out of range (-90..90, -180..180)"
    );
    // The same with a value that cannot be read at all.
    assert_eq!(
        all_problems(&config.replace("latitude: 153.3", "latitude: [53]")),
        "datacenters.eu-west.latitude (line 6 column 24): invalid type: sequence, expected a number"
    );
    // A misspelt section: it is reported, and the section it should have been is missing, but the
    // pools that name its datacenters are not each an unknown datacenter.
    assert_eq!(
        all_problems(&VALID.replace("datacenters:", "datacentres:")),
        "datacentres (line 4): unknown section (expected one of server, geo, zones, datacenters, services, control, directory, state)\n\
         datacenters: missing section: at least one datacenter is needed"
    );
    // An invalid zone does not make every service name "outside every zone".
    assert_eq!(
        all_problems(&VALID.replace("origin: Example.COM.", "origin: \"Example..COM\"")),
        "zones[0].origin: \"Example..COM\": every label must be 1 to 63 characters"
    );
}

#[test]
fn every_unreadable_entry_is_reported_and_the_rest_still_checked() {
    let yaml = format!(
        "{}{}",
        VALID
            .replace("policy: nearest", "policy: nearest\n    ttl: -1")
            .replace("latitude: 39.0", "latitude: [39]"),
        r#"  api:
    name: api.example.com
    policy: failover
    answers: many
  mail:
    name: mail.example.com
    policy: nearest
    pools: { eu-west: { a: [192.0.2.300] } }
"#
    );
    assert_eq!(
        all_problems(&yaml),
        "datacenters.us-east.latitude (line 5 column 24): invalid type: sequence, expected a number\n\
         services.www.ttl (line 11 column 10): invalid type: integer `-1`, expected a whole number from 0 to 4294967295\n\
         services.api.answers (line 19 column 14): invalid type: string \"many\", expected a whole number from 0 to 4294967295\n\
         services.mail.pools.eu-west.a[0]: \"192.0.2.300\" is not an IPv4 address"
    );
}

#[test]
fn tcp_limits_and_rrl_have_documented_defaults_and_checked_values() {
    let config = Config::from_yaml_str(VALID).unwrap();
    let tcp = &config.server.tcp;
    assert_eq!(tcp.max_connections, raw::DEFAULT_TCP_MAX_CONNECTIONS);
    assert_eq!(tcp.max_connections_per_client, 20);
    assert_eq!(tcp.message_timeout, Duration::from_millis(500));
    assert_eq!(tcp.idle_timeout, Duration::from_secs(10));
    assert_eq!(config.server.rrl, None, "absent: off");
    assert_eq!(
        config.server.version, None,
        "absent: version.bind is REFUSED"
    );
    assert!(config.server.deprecations.is_empty());

    let rrl = format!(
        "server: {{ rrl: {{ responses_per_second: 200, exempt: [192.0.2.7/24] }} }}\n{VALID}"
    );
    let rrl = Config::from_yaml_str(&rrl).unwrap().server.rrl.unwrap();
    assert_eq!((rrl.responses_per_second, rrl.slip), (200, 2));
    assert_eq!((rrl.ipv4_prefix, rrl.ipv6_prefix), (24, 56));
    assert_eq!(rrl.exempt, vec!["192.0.2.0/24".parse().unwrap()]);

    let bad = format!(
        "server:\n  tcp: {{ max_connections: 0, message_timeout_ms: 0 }}\n  rrl: {{ responses_per_second: 0, slip: 101, ipv4_prefix: 33, exempt: [nope] }}\n{VALID}"
    );
    assert_eq!(
        problems(&bad),
        [
            "server.tcp.max_connections: must be at least 1",
            "server.tcp.message_timeout_ms: must be at least 1",
            "server.rrl.responses_per_second: 0 is not from 1 to 65535 (remove server.rrl to turn limiting off)",
            "server.rrl.slip: 101 is more than 100",
            "server.rrl.ipv4_prefix: 33 is not a prefix length from 1 to 32",
            "server.rrl.exempt[0]: \"nope\" is not a network (address/prefix)",
        ]
    );

    let out_of_range = format!(
        "server:\n  query_log: {{ queue_lines: 0 }}\n  traffic: {{ window_seconds: 9, sample_one_in: 1000001, max_networks: 10000001 }}\n{VALID}"
    );
    assert_eq!(
        problems(&out_of_range),
        [
            "server.traffic.window_seconds: 9 is not from 10 to 86400",
            "server.traffic.sample_one_in: 1000001 is not from 0 to 1000000",
            "server.traffic.max_networks: 10000001 is not from 1 to 10000000",
            "server.query_log.queue_lines: 0 is not from 1 to 1000000",
        ]
    );
}

#[test]
fn the_old_tcp_idle_timeout_name_still_works_with_a_deprecation() {
    let old = format!("server: {{ tcp_idle_timeout_seconds: 3 }}\n{VALID}");
    let server = Config::from_yaml_str(&old).unwrap().server;
    assert_eq!(server.tcp.idle_timeout, Duration::from_secs(3));
    assert_eq!(
        server
            .deprecations
            .iter()
            .map(Problem::to_string)
            .collect::<Vec<_>>(),
        ["server.tcp_idle_timeout_seconds: is deprecated: use server.tcp.idle_timeout_ms"]
    );
    // The new name wins when both are set.
    let both = format!(
        "server: {{ tcp_idle_timeout_seconds: 3, tcp: {{ idle_timeout_ms: 700 }} }}\n{VALID}"
    );
    let server = Config::from_yaml_str(&both).unwrap().server;
    assert_eq!(server.tcp.idle_timeout, Duration::from_millis(700));
}

#[test]
fn failover_and_weighted_refuse_rules_they_cannot_apply() {
    for policy in ["failover", "weighted"] {
        let yaml = VALID.replace("policy: nearest", &format!("policy: {policy}")).replace(
            "    order: [eu-west]\n",
            "    order: [eu-west]\n    geofence: [{ continents: [EU], datacenters: [eu-west] }]\n    overrides:\n      - { cidrs: [192.0.2.0/24], datacenters: [us-east] }\n      - { countries: [GB], datacenters: [eu-west] }\n",
        );
        let got = problems(&yaml);
        assert_eq!(got.len(), 2, "{policy}: {got:#?}");
        assert!(
            got[0].starts_with(&format!(
                "services.www.geofence: the {policy} policy does not place clients"
            )),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with(&format!(
                "services.www.overrides[1]: the {policy} policy does not place clients"
            )),
            "{got:#?}"
        );
    }
    // Network overrides apply to every policy.
    let yaml = VALID
        .replace("policy: nearest", "policy: weighted")
        .replace(
            "    order: [eu-west]\n",
            "    overrides: [{ cidrs: [192.0.2.0/24], datacenters: [us-east] }]\n",
        );
    Config::from_yaml_str(&yaml).expect("a network override on a weighted service");
}

/// The YAML path under which each `Raw*` struct's fields appear in docs/CONFIGURATION.md.
const DOCUMENTED_AT: &[(&str, &[&str])] = &[
    ("RawConfig", &[""]),
    ("RawServer", &["server."]),
    ("RawTcp", &["server.tcp."]),
    ("RawRrl", &["server.rrl."]),
    ("RawTraffic", &["server.traffic."]),
    ("RawQueryLog", &["server.query_log."]),
    ("RawGeo", &["geo."]),
    ("RawZone", &["zones[]."]),
    ("RawDatacenter", &["datacenters.<name>."]),
    ("RawService", &["services.<id>."]),
    ("RawCapacity", &["services.<id>.capacity."]),
    ("RawMetric", &["services.<id>.metric."]),
    (
        "RawClientRule",
        &["services.<id>.geofence[].", "services.<id>.overrides[]."],
    ),
    ("RawPool", &["services.<id>.pools.<datacenter>."]),
    ("RawControl", &["control."]),
    ("RawRateLimit", &["control.rate_limit."]),
    ("RawToken", &["control.tokens[]."]),
    ("RawDirectory", &["directory."]),
    ("RawState", &["state."]),
    ("RawEtcd", &["state.etcd."]),
    ("RawEtcdTls", &["state.etcd.tls."]),
];

/// Every field of every `Raw*` struct in raw.rs, as (struct, field), read from the source so that
/// a new field cannot be missed.
fn raw_fields() -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut current: Option<String> = None;
    for line in include_str!("raw.rs").lines() {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            current = rest.split_whitespace().next().map(str::to_owned);
        } else if line == "}" {
            current = None;
        } else if let (Some(name), Some(rest)) = (&current, line.strip_prefix("    pub "))
            && let Some((field, _)) = rest.split_once(':')
        {
            fields.push((name.clone(), field.to_owned()));
        }
    }
    fields
}

#[test]
fn every_raw_field_is_documented() {
    let doc = include_str!("../../docs/CONFIGURATION.md");
    let fields = raw_fields();
    assert!(fields.len() > 50, "raw.rs was not read: {fields:?}");
    let mut missing = Vec::new();
    for (name, field) in &fields {
        let Some((_, prefixes)) = DOCUMENTED_AT.iter().find(|(raw, _)| raw == name) else {
            missing.push(format!("{name} (add it to DOCUMENTED_AT)"));
            continue;
        };
        for prefix in *prefixes {
            let path = format!("`{prefix}{field}`");
            if !doc.contains(&path) {
                missing.push(path);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/CONFIGURATION.md does not document:\n{}",
        missing.join("\n")
    );
}

#[test]
fn balancing_settings_are_validated_with_their_paths() {
    let valid = VALID.replace(
        "    policy: nearest\n    order: [eu-west]\n",
        "    policy: nearest\n    order: [eu-west]\n    slow_start_seconds: 120\n    max_service_latency_ms: 250\n    rotation: fixed\n",
    );
    let config = Config::from_yaml_str(&valid.replace(
        "us-east: { a: [192.0.2.1], aaaa",
        "us-east: { bias: \"-20 %\", a: [192.0.2.1], aaaa",
    ))
    .expect("valid balancing settings");
    let www = &config.services[0];
    assert_eq!(www.slow_start, Duration::from_secs(120));
    assert_eq!(www.max_service_latency_ms, Some(250.0));
    assert_eq!(www.pools[0].bias, Bias::Percent(-20.0));
    assert_eq!(www.pools[1].bias, Bias::None);
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        ("    policy: nearest\n", "    policy: nearest\n    slow_start_seconds: 90000\n", "services.www.slow_start_seconds: 90000 is more than a day"),
        ("    policy: nearest\n", "    policy: nearest\n    max_service_latency_ms: -1\n", "services.www.max_service_latency_ms: -1 is not a positive"),
        ("    policy: nearest\n", "    policy: nearest\n    rotation: sideways\n", "services.www.rotation: \"sideways\" is not fixed, cyclic or random"),
        ("    policy: nearest\n", "    policy: nearest\n    max_extra_km: 100\n", "services.www.max_extra_km: only the least-loaded policy uses it"),
        ("    policy: nearest\n", "    policy: least-loaded\n    max_extra_km: -5\n", "services.www.max_extra_km: -5 is not a distance"),
        ("us-east: { a:", "us-east: { bias: 300, a:", "services.www.pools.us-east.bias: \"300\" is not a bias"),
        ("us-east: { a:", "us-east: { bias: \"150 %\", a:", "services.www.pools.us-east.bias: \"150 %\" is not a bias"),
        ("    policy: nearest\n", "    policy: cascade\n    geofence: [{ continents: [EU], datacenters: [eu-west] }]\n", "services.www.geofence: the cascade policy does not place clients"),
        ("    policy: nearest\n    order", "    policy: failover\n    order", "__bias__"),
    ];
    for &(from, to, expected) in cases {
        let yaml = VALID.replace(from, to);
        assert_ne!(yaml, VALID, "{to}");
        if expected == "__bias__" {
            let yaml = yaml.replace("us-east: { a:", "us-east: { bias: \"10 km\", a:");
            let got = problems(&yaml);
            assert!(
                got.iter().any(|p| p
                    .contains("services.www.pools: the failover policy does not rank by distance")),
                "{got:?}"
            );
            continue;
        }
        let got = problems(&yaml);
        assert!(got.iter().any(|p| p.starts_with(expected)), "{to}: {got:?}");
    }
    // cyclic and random are taken, up to MAX_ROTATED_ADDRESSES addresses of a family per pool.
    for rotation in [Rotation::Cyclic, Rotation::Random] {
        let with = |n: usize| {
            let addresses: Vec<String> = (1..=n).map(|i| format!("192.0.2.{i}")).collect();
            VALID
                .replace(
                    "    policy: nearest\n",
                    &format!("    policy: nearest\n    rotation: {}\n", rotation.name()),
                )
                .replace(
                    "us-east: { a: [192.0.2.1]",
                    &format!("us-east: {{ a: [{}]", addresses.join(", ")),
                )
        };
        let config = Config::from_yaml_str(&with(MAX_ROTATED_ADDRESSES))
            .expect("a pool of the most addresses rotated");
        assert_eq!(config.services[0].rotation, rotation);
        let got = problems(&with(MAX_ROTATED_ADDRESSES + 1));
        let expected = format!(
            "services.www.rotation: {} rotates at most {MAX_ROTATED_ADDRESSES} addresses of a family per pool; a pool has {}",
            rotation.name(),
            MAX_ROTATED_ADDRESSES + 1
        );
        assert_eq!(got, vec![expected]);
    }
}
