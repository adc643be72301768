//! The fuzz targets' inputs kept as regression tests: every file under
//! `fuzz/regressions/<target>/` (each a crash or a finding of that target, named for what it
//! found) and the seed corpus under `fuzz/seeds/<target>/` run through the same checks as the
//! fuzzer (`fuzz/src/checks.rs`, included here), on the stable toolchain.

use std::fs;
use std::path::Path;

use crate::fuzz_checks as checks;

/// Runs every input of `target` (regressions and seeds) through `check`; returns how many.
fn run(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("a directory entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let bytes = fs::read(&path).expect("read a kept input");
            eprintln!("{target}: {}", path.display());
            check(&bytes);
            n += 1;
        }
    }
    n
}

#[test]
fn request_inputs() {
    assert!(run("request", checks::request) > 0, "request inputs kept");
}

#[test]
fn fast_path_inputs() {
    assert!(
        run("fast_path", checks::fast_path) > 0,
        "fast path inputs kept"
    );
    // The request target's inputs are queries too.
    assert!(run("request", checks::fast_path) > 0, "request inputs kept");
}

#[test]
fn zone_inputs() {
    assert!(run("zone", checks::zone) > 0, "zone inputs kept");
}

#[test]
fn config_inputs() {
    assert!(run("config", checks::config) > 0, "config inputs kept");
}

#[test]
fn report_inputs() {
    assert!(run("report", checks::report) > 0, "report inputs kept");
}

#[test]
fn import_inputs() {
    assert!(run("import", checks::import) > 0, "import inputs kept");
}

/// The request checks themselves catch a wrong reply: a different ID, QR clear, a lost
/// question, a reply over 512 bytes to a query without EDNS.
#[test]
fn request_checks_catch_wrong_replies() {
    use meridian::dns::Transport;
    let query =
        crate::client::Ask::new("www.example.com.", hickory_proto::rr::RecordType::A).to_bytes();
    let (handler, _) = checks::example();
    let src = "192.0.2.1:5353".parse().unwrap();
    let mut good = Vec::new();
    assert!(
        handler.answer(&query, src, Transport::Udp, &mut good),
        "a reply"
    );
    checks::check_reply(&query, Some(&good), Transport::Udp);
    let mut wrong_id = good.clone();
    wrong_id[0] ^= 0xff;
    let mut no_qr = good.clone();
    no_qr[2] &= 0x7f;
    let mut no_question = good.clone();
    no_question.truncate(12);
    no_question[4..12].fill(0);
    let mut too_long = good.clone();
    too_long.resize(600, 0);
    for (what, reply) in [
        ("id", wrong_id),
        ("qr", no_qr),
        ("question", no_question),
        ("size", too_long),
    ] {
        let caught =
            std::panic::catch_unwind(|| checks::check_reply(&query, Some(&reply), Transport::Udp));
        assert!(caught.is_err(), "the checks miss a wrong {what}");
    }
}
