use std::collections::BTreeMap;

use super::*;
use crate::routing::DcStatus;

/// One parsed sample line: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format (as written by prometheus' `TextEncoder`) into samples.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("sample value is a number");
            let Some((name, labels)) = series.split_once('{') else {
                return (series.to_owned(), BTreeMap::new(), value);
            };
            let labels = labels.strip_suffix('}').expect("labels close with }");
            (name.to_owned(), parse_labels(labels), value)
        })
        .collect()
}

/// Parses `a="x",b="y"`; values in our tests hold no escaped characters, checked here.
fn parse_labels(labels: &str) -> BTreeMap<String, String> {
    assert!(!labels.contains('\\'), "escapes not handled: {labels}");
    let mut res = BTreeMap::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label has a value");
        let (value, after) = after.split_once('"').expect("label value is closed");
        res.insert(key.to_owned(), value.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    res
}

/// The value of the one sample named `name` with exactly `labels`, if there is one.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let found: Vec<f64> = parse(text)
        .into_iter()
        .filter(|(sample_name, sample_labels, _)| sample_name == name && *sample_labels == wanted)
        .map(|(_, _, value)| value)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} exported twice");
    found.first().copied()
}

/// The number of samples named `name`.
fn count(text: &str, name: &str) -> usize {
    parse(text)
        .into_iter()
        .filter(|(sample_name, _, _)| sample_name == name)
        .count()
}

#[test]
fn query_type_codes() {
    let table = [
        (1, QueryType::A, "A"),
        (2, QueryType::Ns, "NS"),
        (5, QueryType::Cname, "CNAME"),
        (6, QueryType::Soa, "SOA"),
        (12, QueryType::Ptr, "PTR"),
        (15, QueryType::Mx, "MX"),
        (16, QueryType::Txt, "TXT"),
        (28, QueryType::Aaaa, "AAAA"),
        (33, QueryType::Srv, "SRV"),
        (255, QueryType::Any, "ANY"),
        (257, QueryType::Caa, "CAA"),
        // Unknown, obsolete (MD=3) and meta types (AXFR=252, OPT=41) are all OTHER.
        (0, QueryType::Other, "OTHER"),
        (3, QueryType::Other, "OTHER"),
        (41, QueryType::Other, "OTHER"),
        (65, QueryType::Other, "OTHER"),
        (252, QueryType::Other, "OTHER"),
        (u16::MAX, QueryType::Other, "OTHER"),
    ];
    for (code, qtype, label) in table {
        assert_eq!(QueryType::from_code(code), qtype, "code {code}");
        assert_eq!(qtype.label(), label, "code {code}");
    }
}

#[test]
fn rcode_codes() {
    let table = [
        (0, Rcode::NoError, "NOERROR"),
        (1, Rcode::FormErr, "FORMERR"),
        (2, Rcode::ServFail, "SERVFAIL"),
        (3, Rcode::NxDomain, "NXDOMAIN"),
        (4, Rcode::NotImp, "NOTIMP"),
        (5, Rcode::Refused, "REFUSED"),
        (16, Rcode::BadVers, "BADVERS"),
        (6, Rcode::Other, "OTHER"),
        (9, Rcode::Other, "OTHER"),
        (15, Rcode::Other, "OTHER"),
        (17, Rcode::Other, "OTHER"),
        (u16::MAX, Rcode::Other, "OTHER"),
    ];
    for (code, rcode, label) in table {
        assert_eq!(Rcode::from_code(code), rcode, "code {code}");
        assert_eq!(rcode.label(), label, "code {code}");
    }
}

#[test]
fn label_arrays_match_discriminants() {
    // The query path indexes `queries` with `as usize`: ALL must list variants in order.
    for (index, qtype) in QueryType::ALL.into_iter().enumerate() {
        assert_eq!(qtype as usize, index);
    }
    for (index, rcode) in Rcode::ALL.into_iter().enumerate() {
        assert_eq!(rcode as usize, index);
    }
}

#[test]
fn render_reports_recorded_values() {
    let metrics = Metrics::new();
    metrics.record_query(QueryType::A, Rcode::NoError, 0.000_02);
    metrics.record_query(QueryType::A, Rcode::NoError, 0.000_08);
    metrics.record_query(QueryType::from_code(28), Rcode::from_code(3), 0.003);
    metrics.record_query(QueryType::from_code(99), Rcode::from_code(9), 0.5);

    let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc", "sfo"]);
    answers.inc(0, 0);
    answers.inc(0, 0);
    answers.inc(1, 2);
    let failed_open = metrics.failed_open_counters(&["www", "api"]);
    failed_open.inc(1);

    metrics.record_reload(true);
    metrics.record_reload(false);
    metrics.record_reload(false);
    metrics.record_http("/v1/datacenters/{dc}/report", 204);
    metrics.record_http("/v1/datacenters/{dc}/report", 204);
    metrics.record_http("/v1/reload", 500);

    metrics.set_datacenter_state("ams", DcStatus::Stale);
    metrics.set_datacenter_state("ams", DcStatus::Fresh);
    metrics.set_report_age("ams", 2.5);
    metrics.set_utilization("ams", 0.75);
    metrics.set_generation(7);

    let text = metrics.render();
    let get = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);

    let query =
        |qtype: &str, rcode: &str| get(DNS_QUERIES_TOTAL, &[("qtype", qtype), ("rcode", rcode)]);
    assert_eq!(query("A", "NOERROR"), Some(2.0));
    assert_eq!(query("AAAA", "NXDOMAIN"), Some(1.0));
    assert_eq!(query("OTHER", "OTHER"), Some(1.0));
    // Every combination is exported from the start, at zero.
    assert_eq!(query("MX", "REFUSED"), Some(0.0));
    assert_eq!(count(&text, DNS_QUERIES_TOTAL), 12 * 8);

    let duration = DNS_QUERY_DURATION_SECONDS;
    let bucket = |le: &str| get(&format!("{duration}_bucket"), &[("le", le)]);
    assert_eq!(bucket("0.00001"), Some(0.0));
    assert_eq!(bucket("0.000025"), Some(1.0));
    assert_eq!(bucket("0.0001"), Some(2.0));
    assert_eq!(bucket("0.005"), Some(3.0));
    assert_eq!(bucket("0.1"), Some(3.0));
    assert_eq!(bucket("+Inf"), Some(4.0));
    assert_eq!(get(&format!("{duration}_count"), &[]), Some(4.0));
    let sum = get(&format!("{duration}_sum"), &[]).expect("sum exported");
    assert!((sum - 0.503_1).abs() < 1e-9, "sum {sum}");

    let answer = |service: &str, datacenter: &str| {
        get(
            DNS_ANSWERS_TOTAL,
            &[("service", service), ("datacenter", datacenter)],
        )
    };
    assert_eq!(answer("www", "ams"), Some(2.0));
    assert_eq!(answer("api", "sfo"), Some(1.0));
    assert_eq!(answer("www", "nyc"), Some(0.0));
    assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 2 * 3);
    assert_eq!(
        get(ROUTING_FAILED_OPEN_TOTAL, &[("service", "api")]),
        Some(1.0)
    );
    assert_eq!(
        get(ROUTING_FAILED_OPEN_TOTAL, &[("service", "www")]),
        Some(0.0)
    );

    assert_eq!(get(CONFIG_RELOADS_TOTAL, &[("outcome", "ok")]), Some(1.0));
    assert_eq!(
        get(CONFIG_RELOADS_TOTAL, &[("outcome", "failed")]),
        Some(2.0)
    );
    let route = "/v1/datacenters/{dc}/report";
    assert_eq!(
        get(
            CONTROL_REQUESTS_TOTAL,
            &[("route", route), ("status", "204")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            CONTROL_REQUESTS_TOTAL,
            &[("route", "/v1/reload"), ("status", "500")]
        ),
        Some(1.0)
    );

    let state = |state: &str| get(DATACENTER_STATE, &[("datacenter", "ams"), ("state", state)]);
    assert_eq!(state("fresh"), Some(1.0));
    for other in ["stale", "down", "unreported", "drained"] {
        assert_eq!(state(other), Some(0.0), "state {other}");
    }
    assert_eq!(
        get(DATACENTER_REPORT_AGE_SECONDS, &[("datacenter", "ams")]),
        Some(2.5)
    );
    assert_eq!(
        get(DATACENTER_UTILIZATION_RATIO, &[("datacenter", "ams")]),
        Some(0.75)
    );
    assert_eq!(get(SNAPSHOT_GENERATION, &[]), Some(7.0));
}

#[test]
fn render_declares_types() {
    let text = Metrics::new().render();
    assert!(text.contains(&format!("# TYPE {DNS_QUERIES_TOTAL} counter\n")));
    assert!(text.contains(&format!("# TYPE {DNS_QUERY_DURATION_SECONDS} histogram\n")));
    assert!(text.contains(&format!("# TYPE {SNAPSHOT_GENERATION} gauge\n")));
}

#[test]
fn bad_durations_do_not_poison_the_sum() {
    let metrics = Metrics::new();
    metrics.record_query(QueryType::A, Rcode::NoError, f64::NAN);
    metrics.record_query(QueryType::A, Rcode::NoError, f64::INFINITY);
    metrics.record_query(QueryType::A, Rcode::NoError, -1.0);
    metrics.record_query(QueryType::A, Rcode::NoError, 0.001);
    let text = metrics.render();
    let duration = DNS_QUERY_DURATION_SECONDS;
    assert_eq!(value(&text, &format!("{duration}_count"), &[]), Some(4.0));
    assert_eq!(value(&text, &format!("{duration}_sum"), &[]), Some(0.001));
    assert_eq!(
        value(&text, &format!("{duration}_bucket"), &[("le", "0.00001")]),
        Some(3.0)
    );
}

#[test]
fn out_of_range_indexes_count_nothing() {
    let metrics = Metrics::new();
    let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
    answers.inc(2, 0);
    answers.inc(0, 2);
    // (0, 2) must not wrap into row 1: that would be (1, 0).
    answers.inc(0, 3);
    answers.inc(usize::MAX, usize::MAX);
    answers.inc(usize::MAX, 1);
    let failed_open = metrics.failed_open_counters(&["www"]);
    failed_open.inc(1);
    failed_open.inc(usize::MAX);
    AnswerCounters::default().inc(0, 0);
    ServiceCounters::default().inc(0);

    let text = metrics.render();
    let total: f64 = parse(&text)
        .into_iter()
        .filter(|(name, _, _)| name == DNS_ANSWERS_TOTAL || name == ROUTING_FAILED_OPEN_TOTAL)
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(total, 0.0);
    assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 4);
}

#[test]
fn counters_survive_reloads() {
    let metrics = Metrics::new();
    let before = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
    let failed_before = metrics.failed_open_counters(&["www", "api"]);
    before.inc(0, 1); // www, nyc
    before.inc(1, 0); // api, ams
    failed_before.inc(1); // api

    // The reloaded configuration reorders both lists and adds names.
    let after = metrics.answer_counters(&["api", "new", "www"], &["nyc", "sfo", "ams"]);
    let failed_after = metrics.failed_open_counters(&["new", "api", "www"]);
    after.inc(2, 0); // www, nyc
    after.inc(0, 2); // api, ams
    after.inc(1, 1); // new, sfo
    failed_after.inc(1); // api
    // A query still holding the old snapshot counts into the same series.
    before.inc(0, 1); // www, nyc

    let text = metrics.render();
    let answer = |service: &str, datacenter: &str| {
        value(
            &text,
            DNS_ANSWERS_TOTAL,
            &[("service", service), ("datacenter", datacenter)],
        )
    };
    assert_eq!(answer("www", "nyc"), Some(3.0));
    assert_eq!(answer("api", "ams"), Some(2.0));
    assert_eq!(answer("new", "sfo"), Some(1.0));
    assert_eq!(answer("www", "sfo"), Some(0.0));
    assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 3 * 3);
    assert_eq!(
        value(&text, ROUTING_FAILED_OPEN_TOTAL, &[("service", "api")]),
        Some(2.0)
    );
}

#[test]
fn forget_datacenter_removes_its_series() {
    let metrics = Metrics::new();
    let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
    answers.inc(0, 0);
    answers.inc(1, 1);
    for datacenter in ["ams", "nyc"] {
        metrics.set_datacenter_state(datacenter, DcStatus::Down);
        metrics.set_report_age(datacenter, 30.0);
        metrics.set_utilization(datacenter, 0.5);
    }

    metrics.forget_datacenter("ams");
    metrics.forget_datacenter("never-configured");

    let text = metrics.render();
    let labelled_ams = parse(&text)
        .into_iter()
        .filter(|(_, labels, _)| labels.get("datacenter").is_some_and(|dc| dc == "ams"))
        .count();
    assert_eq!(labelled_ams, 0, "{text}");
    assert!(!text.contains("\"ams\""), "{text}");
    // The other datacenter is untouched.
    assert_eq!(count(&text, DATACENTER_STATE), 5);
    assert_eq!(
        value(
            &text,
            DATACENTER_STATE,
            &[("datacenter", "nyc"), ("state", "down")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            DATACENTER_REPORT_AGE_SECONDS,
            &[("datacenter", "nyc")]
        ),
        Some(30.0)
    );
    assert_eq!(
        value(
            &text,
            DNS_ANSWERS_TOTAL,
            &[("service", "api"), ("datacenter", "nyc")]
        ),
        Some(1.0)
    );
    assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 2);
}

#[test]
fn forget_service_removes_its_series() {
    let metrics = Metrics::new();
    let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
    let failed_open = metrics.failed_open_counters(&["www", "api"]);
    answers.inc(1, 1);
    failed_open.inc(1);

    metrics.forget_service("www");

    let text = metrics.render();
    assert!(!text.contains("\"www\""), "{text}");
    assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 2);
    assert_eq!(
        value(&text, ROUTING_FAILED_OPEN_TOTAL, &[("service", "api")]),
        Some(1.0)
    );
}

#[test]
fn hot_path_labels_stay_bounded() {
    // The hot methods take enums and indexes, never a string: these coercions only compile
    // while that stays true.
    let _: fn(&Metrics, QueryType, Rcode, f64) = Metrics::record_query;
    let _: fn(&AnswerCounters, usize, usize) = AnswerCounters::inc;
    let _: fn(&ServiceCounters, usize) = ServiceCounters::inc;

    // Whatever codes clients send, the query series stay the same 12 x 8.
    let metrics = Metrics::new();
    for code in 0..=u16::MAX {
        metrics.record_query(QueryType::from_code(code), Rcode::from_code(code), 0.0);
    }
    let text = metrics.render();
    assert_eq!(count(&text, DNS_QUERIES_TOTAL), 12 * 8);
    let total: f64 = parse(&text)
        .into_iter()
        .filter(|(name, _, _)| name == DNS_QUERIES_TOTAL)
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(total, 65_536.0);
    // 11 codes are known qtypes and 7 known rcodes; 1, 2, 5 and 16 are both, so 14 codes
    // land anywhere but OTHER/OTHER.
    assert_eq!(
        value(
            &text,
            DNS_QUERIES_TOTAL,
            &[("qtype", "OTHER"), ("rcode", "OTHER")]
        ),
        Some(65_536.0 - 14.0)
    );
}

#[test]
fn concurrent_recording_is_exact() {
    let metrics = Metrics::new();
    let answers = metrics.answer_counters(&["www"], &["ams"]);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..10_000 {
                    metrics.record_query(QueryType::Aaaa, Rcode::NoError, 0.000_01);
                    answers.inc(0, 0);
                }
            });
        }
    });
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            DNS_QUERIES_TOTAL,
            &[("qtype", "AAAA"), ("rcode", "NOERROR")]
        ),
        Some(40_000.0)
    );
    assert_eq!(
        value(
            &text,
            DNS_ANSWERS_TOTAL,
            &[("service", "www"), ("datacenter", "ams")]
        ),
        Some(40_000.0)
    );
}

#[test]
fn metrics_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Metrics>();
    assert_send_sync::<AnswerCounters>();
    assert_send_sync::<ServiceCounters>();
}

#[test]
fn names_follow_conventions() {
    let counters = [
        DNS_QUERIES_TOTAL,
        DNS_ANSWERS_TOTAL,
        ROUTING_FAILED_OPEN_TOTAL,
        CONFIG_RELOADS_TOTAL,
        CONFIG_BUILDS_TOTAL,
        CONTROL_REQUESTS_TOTAL,
    ];
    let others = [
        DNS_QUERY_DURATION_SECONDS,
        DATACENTER_REPORT_AGE_SECONDS,
        DATACENTER_STATE,
        DATACENTER_UTILIZATION_RATIO,
        SNAPSHOT_GENERATION,
        BUILD_INFO,
    ];
    for name in counters.iter().chain(&others) {
        assert!(name.starts_with("meridian_"), "{name}");
    }
    for name in counters {
        assert!(name.ends_with("_total"), "{name}");
    }
}

#[test]
fn build_info_and_process_metrics_are_exported() {
    let text = Metrics::new().render();
    assert_eq!(
        value(
            &text,
            BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", BUILD_COMMIT)
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!BUILD_COMMIT.is_empty());
    // Linux has /proc: the collector reports this process.
    if cfg!(target_os = "linux") {
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(value(&text, name, &[]).is_some(), "{name} in {text}");
        }
        assert!(value(&text, "process_open_fds", &[]).unwrap() > 0.0);
    }
}

#[test]
fn counts_of_threads_that_exit_are_kept_and_their_shards_reused() {
    let metrics = Metrics::new();
    let answers = metrics.answer_counters(&["www"], &["ams", "nyc"]);
    let count = |n_threads: usize, n: usize| {
        // Every thread holds its shard until all have counted: they are counting at once.
        let all_counted = std::sync::Barrier::new(n_threads);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n_threads)
                .map(|thread| {
                    let (metrics, answers, all_counted) = (&metrics, &answers, &all_counted);
                    scope.spawn(move || {
                        for i in 0..n {
                            metrics.record_query(QueryType::A, Rcode::NoError, 0.000_01);
                            answers.inc(0, (thread + i) % 2);
                            metrics.record_dns_event(DnsEvent::RrlSlipped);
                        }
                        all_counted.wait();
                    })
                })
                .collect();
            // An explicit join waits for the thread's exit, thread-local destructors (which
            // hand the shard back) included; the end of the scope alone does not.
            for thread in threads {
                thread.join().expect("a counting thread");
            }
        });
    };
    // Four at once, then eight one after another: those take over the exited threads' shards.
    count(4, 5_000);
    for _ in 0..8 {
        count(1, 1_000);
    }
    assert_eq!(metrics.shards.n_shards(), 4);

    let text = metrics.render();
    let get = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);
    assert_eq!(
        get(DNS_QUERIES_TOTAL, &[("qtype", "A"), ("rcode", "NOERROR")]),
        Some(28_000.0)
    );
    assert_eq!(
        get(&format!("{DNS_QUERY_DURATION_SECONDS}_count"), &[]),
        Some(28_000.0)
    );
    let answer = |datacenter: &str| {
        get(
            DNS_ANSWERS_TOTAL,
            &[("service", "www"), ("datacenter", datacenter)],
        )
    };
    assert_eq!(answer("ams"), Some(14_000.0));
    assert_eq!(answer("nyc"), Some(14_000.0));
    assert_eq!(
        get(DNS_RRL_LIMITED_TOTAL, &[("action", "slipped")]),
        Some(28_000.0)
    );
    // A second scrape with nothing counted in between exports the same totals.
    let again = metrics.render();
    assert_eq!(
        value(
            &again,
            DNS_ANSWERS_TOTAL,
            &[("service", "www"), ("datacenter", "ams")]
        ),
        Some(14_000.0)
    );
}

#[test]
fn banned_counters_sum_threads_and_a_reused_slot_starts_at_zero() {
    let metrics = Metrics::new();
    let first = metrics.banned_counter("rule-1");
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..1_000 {
                    first.inc();
                }
            });
        }
    });
    assert_eq!(first.get(), 3_000);
    // The same rule resolved again counts into the same series.
    metrics.banned_counter("rule-1").inc();
    assert_eq!(first.get(), 3_001);
    let text = metrics.render();
    assert_eq!(
        value(&text, DNS_BANNED_TOTAL, &[("rule", "rule-1")]),
        Some(3_001.0)
    );

    metrics.forget_banned("rule-1");
    let second = metrics.banned_counter("rule-2");
    assert_eq!(
        second.get(),
        0,
        "the forgotten rule's counts are not the new one's"
    );
    second.inc();
    let text = metrics.render();
    assert_eq!(value(&text, DNS_BANNED_TOTAL, &[("rule", "rule-1")]), None);
    assert_eq!(
        value(&text, DNS_BANNED_TOTAL, &[("rule", "rule-2")]),
        Some(1.0)
    );
    assert_eq!(second.get(), 1);
}
