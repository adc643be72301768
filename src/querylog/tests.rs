//! The sampler's rate, the writer's lines, and a stuck writer: lines dropped and counted, never
//! waited for.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::QueryLogOutput;
use crate::metrics::Metrics;

/// A gate a describer stops at: it says it has started, then waits to be let through.
struct Gate {
    started: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
}

/// Describes every query the same way, stopping at `gate` first when it has one.
struct Fixed {
    gate: Option<Gate>,
}

impl Describe for Fixed {
    fn describe(&self, sampled: &Sampled) -> Line {
        if let Some(gate) = &self.gate {
            let _ = gate.started.lock().expect("not poisoned").send(());
            let _ = gate.release.lock().expect("not poisoned").recv();
        }
        let mut line = Line::new(sampled);
        line.name = Some(String::from_utf8_lossy(sampled.query()).into_owned());
        line.rcode = String::from_utf8_lossy(sampled.reply()).into_owned();
        line
    }
}

fn config(per_million: u32, queue_lines: u32) -> QueryLogConfig {
    QueryLogConfig {
        output: QueryLogOutput::Stderr,
        per_million,
        queue_lines,
    }
}

fn sampled(view: Arc<dyn Describe>, name: &str) -> Sampled {
    Sampled::new(
        view,
        name.as_bytes(),
        b"NOERROR",
        "192.0.2.1:53".parse().expect("an address"),
        Path::Fast,
        Protocol::Udp,
        Sent::Answer,
    )
}

fn file_log(
    per_million: u32,
    queue_lines: u32,
) -> (tempfile::TempDir, PathBuf, Arc<QueryLog>, Metrics) {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("queries.log");
    let metrics = Metrics::new();
    let log = QueryLog::start(
        &config(per_million, queue_lines),
        Output::File(path.clone()),
        metrics.samples().clone(),
    )
    .expect("starts");
    (dir, path, log, metrics)
}

#[test]
fn off_nothing_is_sampled_and_on_about_the_rate() {
    let (_dir, _path, log, _metrics) = file_log(0, 16);
    assert!((0..100_000).all(|_| !log.sampled()));
    log.set_rate(PER_MILLION);
    assert!((0..100_000).all(|_| log.sampled()));
    log.set_rate(PER_MILLION / 100);
    let hits = (0..200_000).filter(|_| log.sampled()).count();
    // 1 % of 200 000 is 2 000; a fair generator stays well within ± 300.
    assert!((1_700..2_300).contains(&hits), "{hits}");
}

#[test]
fn lines_are_json_with_every_field() {
    let (_dir, path, log, _metrics) = file_log(PER_MILLION, 16);
    let view: Arc<dyn Describe> = Arc::new(Fixed { gate: None });
    log.offer(sampled(view.clone(), "a \"quoted\" name"));
    log.offer(sampled(view, "second"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.written() < 2 {
        assert!(std::time::Instant::now() < deadline, "not written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let text = std::fs::read_to_string(&path).expect("the file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "a \"quoted\" name");
    assert_eq!(lines[0]["rcode"], "NOERROR");
    assert_eq!(lines[0]["client"], "192.0.2.1");
    assert_eq!(lines[0]["path"], "fast");
    assert_eq!(lines[0]["transport"], "udp");
    assert_eq!(lines[0]["sent"], "answer");
    assert_eq!(lines[1]["name"], "second");
    for field in [
        "unix_ms",
        "client",
        "ecs",
        "name",
        "type",
        "rcode",
        "path",
        "transport",
        "service",
        "datacenters",
        "scope",
        "reason",
        "sent",
    ] {
        assert!(
            lines[0].get(field).is_some(),
            "{field} missing: {}",
            lines[0]
        );
    }
}

#[test]
fn a_stuck_writer_makes_lines_drop_and_count_never_wait() {
    let (_dir, _path, log, metrics) = file_log(PER_MILLION, 4);
    let (started, on_start) = channel();
    let (release, released) = channel();
    let view: Arc<dyn Describe> = Arc::new(Fixed {
        gate: Some(Gate {
            started: Mutex::new(started),
            release: Mutex::new(released),
        }),
    });
    // The writer takes the first and stops at the gate; four more fill the queue; the other
    // five are dropped at once (this test would hang if offering waited).
    log.offer(sampled(view.clone(), "q0"));
    on_start.recv().expect("the writer started on q0");
    for i in 1..10 {
        log.offer(sampled(view.clone(), &format!("q{i}")));
    }
    assert_eq!(log.dropped(), 5);
    assert!(
        metrics
            .render()
            .contains("meridian_samples_dropped_total{record=\"query_log\"} 5")
    );
    // Released, the writer writes the five it holds.
    for _ in 0..5 {
        release.send(()).expect("the writer waits");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.written() < 5 {
        assert!(std::time::Instant::now() < deadline, "not written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(log.written(), 5);
}

#[test]
fn a_timed_change_reverts_unless_replaced() {
    let (_dir, _path, log, _metrics) = file_log(10, 4);
    let first = log.set_rate(PER_MILLION);
    let second = log.set_rate(500);
    assert!(!log.revert(first), "a replaced change does not revert");
    assert_eq!(log.rate(), 500);
    assert!(log.revert(second));
    assert_eq!(log.rate(), 10);
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error() {
    let metrics = Metrics::new();
    let error = QueryLog::start(
        &config(0, 4),
        Output::File(PathBuf::from("/nonexistent-dir/queries.log")),
        metrics.samples().clone(),
    )
    .expect_err("no such directory");
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
}

/// Panics for every query.
struct Broken;

impl Describe for Broken {
    fn describe(&self, _: &Sampled) -> Line {
        panic!("a describer bug, injected by the test")
    }
}

#[test]
fn a_describer_that_panics_loses_its_line_not_the_log() {
    let (_dir, path, log, _metrics) = file_log(PER_MILLION, 16);
    log.offer(sampled(Arc::new(Broken), "lost"));
    log.offer(sampled(Arc::new(Fixed { gate: None }), "kept"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.written() < 1 {
        assert!(std::time::Instant::now() < deadline, "not written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let text = std::fs::read_to_string(&path).expect("the file");
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("\"kept\""), "{text}");
    assert_eq!(log.dropped(), 0);
}
