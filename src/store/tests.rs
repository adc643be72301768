//! Store tests on real redb files in temporary directories: state and audit round trips,
//! durability across reopen and simulated crashes, atomicity, paging, config versions, and clear
//! errors for bad files and corrupt values.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

fn audit(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        unix_ms: 1_700_000_000_000,
        actor: "example-operator".to_owned(),
        role: "operator".to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: serde_json::json!({ "force": false, "note": target }),
    }
}

fn report(capacity: f64) -> StoredReport {
    StoredReport {
        healthy: true,
        capacity,
        load: capacity / 2.0,
        ttl_seconds: 30,
        latency_ms: BTreeMap::from([("us-east".to_owned(), 71.5)]),
        cost: Some(1.25),
        received_unix_ms: 1_700_000_000_123,
    }
}

fn drain_key(datacenter: &str, service: Option<&str>) -> DrainKey {
    DrainKey {
        datacenter: datacenter.to_owned(),
        service: service.map(str::to_owned),
    }
}

fn version(hash: &str, first_seen_unix_ms: u64, text: &str) -> ConfigVersion {
    ConfigVersion {
        hash: hash.to_owned(),
        first_seen_unix_ms,
        text: text.to_owned(),
    }
}

/// A sequence of writes touching every kind of change, with their audit entries.
fn writes() -> Vec<(Change, AuditEntry)> {
    vec![
        (
            Change::Report {
                datacenter: "eu-west".to_owned(),
                report: report(100.0),
            },
            audit("report", "eu-west"),
        ),
        (
            Change::Report {
                datacenter: "us-east".to_owned(),
                report: report(50.0),
            },
            audit("report", "us-east"),
        ),
        (
            Change::Drain {
                key: drain_key("eu-west", None),
                drained: true,
            },
            audit("drain", "eu-west"),
        ),
        (
            Change::Drain {
                key: drain_key("us-east", Some("www")),
                drained: true,
            },
            audit("drain", "us-east/www"),
        ),
        (
            Change::Drain {
                key: drain_key("us-east", Some("api")),
                drained: true,
            },
            audit("drain", "us-east/api"),
        ),
        (
            Change::Drain {
                key: drain_key("us-east", Some("api")),
                drained: false,
            },
            audit("undrain", "us-east/api"),
        ),
        // A report replaces the datacenter's previous one.
        (
            Change::Report {
                datacenter: "eu-west".to_owned(),
                report: report(200.0),
            },
            audit("report", "eu-west"),
        ),
        (
            Change::InstanceDrain { drained: true },
            audit("drain", "instance"),
        ),
        (Change::AuditOnly, audit("reload", "config")),
    ]
}

/// The state [`writes`] leaves behind.
fn expected_state() -> Persisted {
    Persisted {
        reports: BTreeMap::from([
            ("eu-west".to_owned(), report(200.0)),
            ("us-east".to_owned(), report(50.0)),
        ]),
        drains: BTreeSet::from([
            drain_key("eu-west", None),
            drain_key("us-east", Some("www")),
        ]),
        instance_drained: true,
    }
}

/// Applies [`writes`] and checks their sequence numbers.
fn apply_writes(store: &Store) {
    for (i, (change, entry)) in writes().iter().enumerate() {
        let seq = store.apply(change, entry).expect("apply");
        assert_eq!(seq, i as u64 + 1, "{change:?}");
    }
}

/// The audit log [`writes`] leaves behind.
fn expected_audit() -> Vec<(u64, AuditEntry)> {
    writes()
        .into_iter()
        .enumerate()
        .map(|(i, (_, entry))| (i as u64 + 1, entry))
        .collect()
}

/// Checks that `store` holds exactly what [`writes`] and two config versions leave behind.
fn assert_full(store: &Store) {
    assert_eq!(store.load().expect("load"), expected_state());
    assert_eq!(store.audit_log(None, 100).expect("audit"), expected_audit());
    assert_eq!(
        store.config_versions().expect("versions"),
        vec![
            ConfigVersionMeta {
                hash: "aaa".to_owned(),
                first_seen_unix_ms: 1
            },
            ConfigVersionMeta {
                hash: "bbb".to_owned(),
                first_seen_unix_ms: 2
            },
        ]
    );
    assert_eq!(
        store.config_version("bbb").expect("version"),
        Some(version("bbb", 2, "b: 2\n"))
    );
}

/// Fills `store` with what [`assert_full`] expects.
fn fill(store: &Store) {
    apply_writes(store);
    store
        .put_config_version(&version("bbb", 2, "b: 2\n"))
        .expect("put");
    store
        .put_config_version(&version("aaa", 1, "a: 1\n"))
        .expect("put");
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Whether redb must repair the database file at `path` on open, as after a crash; checked on a
/// throwaway copy, since the check repairs it.
fn needs_repair(path: &Path) -> bool {
    let scratch = tempfile::tempdir().expect("tempdir");
    let copy = db_path(scratch.path());
    std::fs::copy(path, &copy).expect("copy");
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&repaired);
    Database::builder()
        .set_repair_callback(move |_| flag.store(true, Ordering::SeqCst))
        .create(&copy)
        .expect("open copy");
    repaired.load(Ordering::SeqCst)
}

#[test]
fn store_and_error_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<StoreError>();
}

#[test]
fn fresh_store_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    for store in [
        Store::open(dir.path()).expect("open"),
        Store::in_memory().expect("memory"),
    ] {
        assert_eq!(store.load().expect("load"), Persisted::default());
        assert!(store.audit_log(None, 10).expect("audit").is_empty());
        assert!(store.config_versions().expect("versions").is_empty());
        assert_eq!(store.config_version("missing").expect("version"), None);
    }
}

#[test]
fn apply_then_load_returns_resulting_state_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    apply_writes(&store);
    assert_eq!(store.load().expect("load"), expected_state());
    assert_eq!(store.audit_log(None, 100).expect("audit"), expected_audit());

    // Undraining the instance and the datacenter is stored too.
    let seq = store
        .apply(
            &Change::InstanceDrain { drained: false },
            &audit("undrain", "instance"),
        )
        .expect("apply");
    assert_eq!(seq, writes().len() as u64 + 1);
    store
        .apply(
            &Change::Drain {
                key: drain_key("eu-west", None),
                drained: false,
            },
            &audit("undrain", "eu-west"),
        )
        .expect("apply");
    let state = store.load().expect("load");
    assert!(!state.instance_drained);
    assert_eq!(
        state.drains,
        BTreeSet::from([drain_key("us-east", Some("www"))])
    );
}

#[test]
fn undrain_of_a_drain_not_in_force_is_audited_and_harmless() {
    let store = Store::in_memory().expect("memory");
    let seq = store
        .apply(
            &Change::Drain {
                key: drain_key("eu-west", Some("www")),
                drained: false,
            },
            &audit("undrain", "eu-west/www"),
        )
        .expect("apply");
    assert_eq!(seq, 1);
    assert_eq!(store.load().expect("load"), Persisted::default());
    assert_eq!(store.audit_log(None, 10).expect("audit").len(), 1);
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        fill(&store);
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_full(&store);
    // The sequence continues after the reopen.
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, writes().len() as u64 + 1);
}

#[test]
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("var").join("lib").join("meridian");
    let store = Store::open(&nested).expect("open");
    store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert!(db_path(&nested).is_file());
}

#[test]
fn open_on_a_path_that_cannot_be_a_directory_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").expect("write");
    let error = Store::open(&file).expect_err("a file is not a directory");
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

#[test]
fn committed_write_survives_a_crash() {
    // A copy of the file taken while the store is still open is what a `kill -9` at that moment
    // would leave on disk: no clean shutdown, so redb must recover it on open.
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);
    std::fs::copy(db_path(dir.path()), db_path(crashed.path())).expect("copy");
    assert!(
        needs_repair(&db_path(crashed.path())),
        "the copy is not a crash image"
    );

    let recovered = Store::open(crashed.path()).expect("recover");
    assert_full(&recovered);
    drop(store);
}

#[test]
fn dropped_store_without_close_keeps_committed_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);
    drop(store);
    assert_full(&Store::open(dir.path()).expect("reopen"));
}

#[test]
fn uncommitted_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);

    {
        let txn = store.db.begin_write().expect("begin");
        let seq = write_change(
            &txn,
            &Change::Report {
                datacenter: "ap-south".to_owned(),
                report: report(7.0),
            },
            &audit("report", "ap-south"),
        )
        .expect("write");
        assert_eq!(seq, writes().len() as u64 + 1);
        write_change(
            &txn,
            &Change::InstanceDrain { drained: false },
            &audit("undrain", "instance"),
        )
        .expect("write");
        // A crash in the middle of the transaction: the file as it is now must recover to the
        // last commit.
        std::fs::copy(db_path(dir.path()), db_path(crashed.path())).expect("copy");
        assert!(
            needs_repair(&db_path(crashed.path())),
            "the copy is not a crash image"
        );
        // Dropped without commit: aborted.
    }

    assert_full(&store);
    assert_full(&Store::open(crashed.path()).expect("recover"));
    // The aborted sequence numbers are not consumed.
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, writes().len() as u64 + 1);
    drop(store);
    assert_eq!(
        Store::open(dir.path())
            .expect("reopen")
            .audit_log(None, 100)
            .expect("audit")
            .len(),
        writes().len() + 1
    );
}

#[test]
fn failed_apply_stores_neither_change_nor_audit() {
    let store = Store::in_memory().expect("memory");
    for bad in [f64::NAN, f64::INFINITY] {
        let mut bad_report = report(10.0);
        bad_report.latency_ms.insert("eu-west".to_owned(), bad);
        let error = store
            .apply(
                &Change::Report {
                    datacenter: "us-east".to_owned(),
                    report: bad_report,
                },
                &audit("report", "us-east"),
            )
            .expect_err("not representable in JSON");
        assert!(
            matches!(&error, StoreError::Unencodable { table: "reports", key, .. } if key == "us-east"),
            "{error:?}"
        );
        assert!(error.to_string().contains("latency_ms.eu-west"), "{error}");
    }
    let error = store
        .apply(
            &Change::Report {
                datacenter: "us-east".to_owned(),
                report: report(f64::NEG_INFINITY),
            },
            &audit("report", "us-east"),
        )
        .expect_err("not representable in JSON");
    assert_eq!(
        error.to_string(),
        "cannot store value in state table reports at key us-east: capacity -inf is not a finite number"
    );

    // The audit entry was written first in each failed transaction, and rolled back with it.
    assert!(store.audit_log(None, 10).expect("audit").is_empty());
    assert_eq!(store.load().expect("load"), Persisted::default());
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, 1);
}

#[test]
fn audit_log_pages() {
    let store = Store::in_memory().expect("memory");
    apply_writes(&store);
    let all = expected_audit();
    let n = all.len();
    assert_eq!(n, 9);

    let seqs = |after, limit| -> Vec<u64> {
        store
            .audit_log(after, limit)
            .expect("audit")
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    };
    assert_eq!(seqs(None, 2), [1, 2]);
    assert_eq!(seqs(Some(2), 2), [3, 4]);
    assert_eq!(seqs(Some(8), 2), [9]);
    assert_eq!(seqs(Some(9), 2), Vec::<u64>::new());
    assert_eq!(seqs(Some(0), 1), [1]);
    assert_eq!(seqs(Some(100), 10), Vec::<u64>::new());
    assert_eq!(seqs(Some(u64::MAX), 10), Vec::<u64>::new());
    assert_eq!(seqs(None, 0), Vec::<u64>::new());
    assert_eq!(seqs(None, usize::MAX).len(), n);

    // Walking page by page visits every entry once, in order, with identical content.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = store.audit_log(after, 4).expect("audit");
        let Some(&(last, _)) = page.last() else {
            break;
        };
        after = Some(last);
        walked.extend(page);
    }
    assert_eq!(walked, all);
}

#[test]
fn concurrent_applies_get_distinct_gap_free_sequence_numbers() {
    let store = Arc::new(Store::in_memory().expect("memory"));
    let handles: Vec<_> = (0..4)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let target = format!("t{thread}-{i}");
                        store
                            .apply(&Change::AuditOnly, &audit("reload", &target))
                            .expect("apply")
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    // Each sequence number holds the entry of the apply that returned it.
    assert_eq!(store.audit_log(None, 100).expect("audit").len(), 40);
}

#[test]
fn config_versions_are_idempotent_and_ordered() {
    let store = Store::in_memory().expect("memory");
    store
        .put_config_version(&version("bbb", 20, "b\n"))
        .expect("put");
    store
        .put_config_version(&version("aaa", 20, "a\n"))
        .expect("put");
    store
        .put_config_version(&version("ccc", 10, "c\n"))
        .expect("put");
    // The same hash again keeps the first record.
    store
        .put_config_version(&version("bbb", 99, "changed\n"))
        .expect("put");

    let listed: Vec<(String, u64)> = store
        .config_versions()
        .expect("versions")
        .into_iter()
        .map(|meta| (meta.hash, meta.first_seen_unix_ms))
        .collect();
    assert_eq!(
        listed,
        [
            ("ccc".to_owned(), 10),
            ("aaa".to_owned(), 20),
            ("bbb".to_owned(), 20)
        ]
    );
    assert_eq!(
        store.config_version("bbb").expect("version"),
        Some(version("bbb", 20, "b\n"))
    );
    assert_eq!(store.config_version("ddd").expect("version"), None);
    assert_eq!(store.config_version("").expect("version"), None);
}

#[test]
fn open_on_a_garbage_file_names_the_path() {
    for garbage in [
        b"hello".to_vec(),
        b"retries: 3\nzones: []\n".repeat(500),
        vec![0xff; 16 * 1024],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        std::fs::write(&path, &garbage).expect("write");
        let error = Store::open(dir.path()).expect_err("not a redb file");
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot open state database {}: ", path.display())),
            "{message}"
        );
        // The file is left alone for the operator to inspect.
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
    }
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let error = Store::open(dir.path()).expect_err("already open");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&db_path(dir.path()).display().to_string()),
        "{error}"
    );
    drop(store);
    Store::open(dir.path()).expect("open after the first is dropped");
}

#[test]
fn corrupt_values_are_reported_with_table_and_key() {
    let store = Store::in_memory().expect("memory");
    fill(&store);
    let txn = store.db.begin_write().expect("begin");
    txn.open_table(REPORTS)
        .expect("table")
        .insert("eu-west", b"{not json".as_slice())
        .expect("insert");
    txn.open_table(AUDIT)
        .expect("table")
        .insert(3, b"[]".as_slice())
        .expect("insert");
    txn.open_table(CONFIG_VERSIONS)
        .expect("table")
        .insert(
            "aaa",
            serde_json::to_vec(&version("zzz", 1, ""))
                .expect("json")
                .as_slice(),
        )
        .expect("insert");
    txn.commit().expect("commit");

    let error = store.load().expect_err("corrupt report");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "reports", key, .. } if key == "eu-west"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("corrupt value in state table reports at key eu-west: "),
        "{error}"
    );

    // Entries before the corrupt one still page normally.
    assert_eq!(store.audit_log(None, 2).expect("audit").len(), 2);
    let error = store
        .audit_log(Some(2), 2)
        .expect_err("corrupt audit entry");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "audit", key, .. } if key == "3"),
        "{error:?}"
    );

    let error = store.config_versions().expect_err("hash differs from key");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "config_versions", key, .. } if key == "aaa"),
        "{error:?}"
    );
    assert!(store.config_version("aaa").is_err());
    assert!(store.config_version("bbb").expect("intact").is_some());
}

#[test]
fn corrupt_drain_key_and_meta_are_reported() {
    let store = Store::in_memory().expect("memory");
    let txn = store.db.begin_write().expect("begin");
    txn.open_table(DRAINS)
        .expect("table")
        .insert("eu-west/www", ())
        .expect("insert");
    txn.commit().expect("commit");
    let error = store.load().expect_err("corrupt drain key");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "drains", key, .. } if key == "eu-west/www"),
        "{error:?}"
    );

    let txn = store.db.begin_write().expect("begin");
    txn.open_table(DRAINS)
        .expect("table")
        .remove("eu-west/www")
        .expect("remove");
    txn.open_table(META)
        .expect("table")
        .insert(INSTANCE_DRAINED_KEY, b"\"yes\"".as_slice())
        .expect("insert");
    txn.commit().expect("commit");
    let error = store.load().expect_err("corrupt meta");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "meta", key, .. } if key == INSTANCE_DRAINED_KEY),
        "{error:?}"
    );
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let txn = store.db.begin_write().expect("begin");
        txn.open_table(META)
            .expect("table")
            .insert(SCHEMA_VERSION_KEY, b"2".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let error = Store::open(dir.path()).expect_err("newer schema");
    assert!(
        matches!(error, StoreError::Schema { found: 2, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "state database {} has schema version 2, this build reads only version 1",
            db_path(dir.path()).display()
        )
    );
}

#[test]
fn in_memory_store_works_like_a_file_store() {
    let memory = Store::in_memory().expect("memory");
    fill(&memory);
    assert_full(&memory);

    // Separate in-memory stores share nothing, and nothing reaches the disk.
    let other = Store::in_memory().expect("memory");
    assert_eq!(other.load().expect("load"), Persisted::default());
    assert!(other.audit_log(None, 10).expect("audit").is_empty());
}

#[test]
fn values_are_readable_json() {
    let store = Store::in_memory().expect("memory");
    fill(&store);
    let txn = store.db.begin_read().expect("begin");
    let reports = txn.open_table(REPORTS).expect("table");
    let value = reports.get("us-east").expect("get").expect("present");
    let json: serde_json::Value = serde_json::from_slice(value.value()).expect("json");
    assert_eq!(json["capacity"], 50.0);
    assert_eq!(json["latency_ms"]["us-east"], 71.5);

    let drains = txn.open_table(DRAINS).expect("table");
    let keys: Vec<String> = drains
        .iter()
        .expect("iter")
        .map(|entry| entry.expect("entry").0.value().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            r#"{"datacenter":"eu-west","service":null}"#,
            r#"{"datacenter":"us-east","service":"www"}"#,
        ]
    );

    let meta = txn.open_table(META).expect("table");
    let drained = meta.get(INSTANCE_DRAINED_KEY).expect("get").expect("set");
    assert_eq!(drained.value(), b"true");
}

#[test]
fn stored_report_defaults_optional_fields() {
    // Reports written before `latency_ms` and `cost` existed still load.
    let json =
        br#"{"healthy":false,"capacity":1.0,"load":0.0,"ttl_seconds":5,"received_unix_ms":7}"#;
    let report: StoredReport = decode(REPORTS_TABLE, "eu-west", json).expect("decode");
    assert_eq!(report.latency_ms, BTreeMap::new());
    assert_eq!(report.cost, None);
}
