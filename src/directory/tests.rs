//! Directory tests: pins over buckets, changes through the overlay and across compactions,
//! export order, and the serving choice.

use std::collections::BTreeMap;

use super::*;

const DCS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

fn p(home: u16, replica: u16) -> Placement {
    Placement { home, replica }
}

fn directory(pins: Vec<(String, Placement)>) -> Directory {
    let names = DCS.iter().map(|&name| name.to_owned()).collect();
    Directory::new(names, Directory::round_robin(3, 64), pins)
}

fn pins_of(ids: impl IntoIterator<Item = (String, Placement)>) -> Vec<(String, Placement)> {
    ids.into_iter().collect()
}

/// Checks every way of reading `dir`'s pins against `expected`, and that `others` are unpinned.
fn check_pins(dir: &Directory, expected: &BTreeMap<String, Placement>, others: &[&str]) {
    assert_eq!(dir.n_pins(), expected.len());
    for (id, &placement) in expected {
        assert_eq!(dir.pin(id), Some(placement), "{id}");
        let entry = dir.lookup(id);
        assert_eq!(
            (entry.placement, entry.source),
            (placement, Source::Pin),
            "{id}"
        );
    }
    for id in others {
        assert_eq!(dir.pin(id), None, "{id}");
        assert_eq!(dir.lookup(id).source, Source::Bucket, "{id}");
    }
    let exported: Vec<(&str, Placement)> = dir.pins().collect();
    let wanted: Vec<(&str, Placement)> = expected.iter().map(|(id, &p)| (id.as_str(), p)).collect();
    assert_eq!(exported, wanted);
}

#[test]
fn unpinned_users_get_their_buckets_placement() {
    let dir = directory(vec![]);
    assert_eq!(dir.n_buckets(), 64);
    for id in ["alice", "bob", "ユーザー42", "user@example.com"] {
        let bucket = bucket_of(id, 64);
        assert_eq!(
            dir.lookup(id),
            Entry {
                bucket,
                placement: dir.bucket(bucket),
                source: Source::Bucket
            },
            "{id}"
        );
    }
}

#[test]
fn pins_override_buckets() {
    let dir = directory(vec![("alice".into(), p(2, 0))]);
    assert_eq!(
        dir.lookup("alice"),
        Entry {
            bucket: bucket_of("alice", 64),
            placement: p(2, 0),
            source: Source::Pin
        }
    );
    assert_eq!(dir.pin("alice"), Some(p(2, 0)));
    assert_eq!(dir.pin("Alice"), None, "ids are case-sensitive");
    assert_eq!(dir.lookup("bob").source, Source::Bucket);
    assert_eq!(dir.n_pins(), 1);
}

#[test]
fn unpinning_restores_the_bucket_and_leaves_the_old_directory_alone() {
    let pinned = directory(vec![("alice".into(), p(2, 0))]);
    let unpinned = pinned.with_pins([("alice".into(), None)]);
    let bucket = bucket_of("alice", 64);
    assert_eq!(
        unpinned.lookup("alice"),
        Entry {
            bucket,
            placement: unpinned.bucket(bucket),
            source: Source::Bucket
        }
    );
    assert_eq!(unpinned.n_pins(), 0);
    assert_eq!(unpinned.pins().count(), 0);
    // Directories are values: the change made a new one.
    assert_eq!(pinned.pin("alice"), Some(p(2, 0)));
    assert_eq!(pinned.n_pins(), 1);
}

#[test]
fn the_last_of_duplicate_pins_wins() {
    let dir = directory(vec![
        ("alice".into(), p(0, 1)),
        ("bob".into(), p(1, 2)),
        ("alice".into(), p(2, 0)),
        ("alice".into(), p(1, 0)),
    ]);
    assert_eq!(dir.n_pins(), 2);
    assert_eq!(dir.pin("alice"), Some(p(1, 0)));

    let dir = dir.with_pins([
        ("bob".into(), None),
        ("bob".into(), Some(p(2, 1))),
        ("carol".into(), Some(p(0, 2))),
        ("carol".into(), None),
    ]);
    assert_eq!(dir.n_pins(), 2);
    assert_eq!(dir.pin("bob"), Some(p(2, 1)));
    assert_eq!(dir.pin("carol"), None);
}

#[test]
fn removing_a_pin_that_does_not_exist_changes_nothing() {
    let dir = directory(vec![("alice".into(), p(0, 1))]);
    let same = dir.with_pins([("nobody".into(), None)]);
    assert_eq!(same.n_pins(), 1);
    assert!(same.overlay.is_empty(), "nothing differs from the index");
}

#[test]
fn undoing_a_change_empties_the_overlay() {
    let dir = directory(vec![("alice".into(), p(0, 1))]);
    let moved = dir.with_pins([
        ("alice".into(), Some(p(2, 0))),
        ("bob".into(), Some(p(1, 2))),
    ]);
    assert_eq!(moved.overlay.len(), 2);
    let back = moved.with_pins([("alice".into(), Some(p(0, 1))), ("bob".into(), None)]);
    assert!(back.overlay.is_empty());
    check_pins(
        &back,
        &BTreeMap::from([("alice".to_owned(), p(0, 1))]),
        &["bob"],
    );
}

#[test]
fn changing_a_few_pins_of_many_shares_the_index_and_moves_no_one_else() {
    let n = 100_000u32;
    let spread = |i: u32| p((i % 3) as u16, ((i + 1) % 3) as u16);
    let base = directory(pins_of((0..n).map(|i| (format!("user-{i}"), spread(i)))));
    let dir = base.with_pins([
        ("user-7".into(), Some(p(2, 2))),
        ("user-8".into(), None),
        ("new".into(), Some(p(1, 1))),
    ]);
    assert!(
        Arc::ptr_eq(&base.base, &dir.base),
        "the index is shared, not copied"
    );
    assert_eq!(dir.overlay.len(), 3);
    assert_eq!(dir.n_pins(), n as usize);
    assert_eq!(dir.pin("user-7"), Some(p(2, 2)));
    assert_eq!(dir.pin("user-8"), None);
    assert_eq!(dir.pin("new"), Some(p(1, 1)));
    for i in (0..n).filter(|i| ![7, 8].contains(i)) {
        let id = format!("user-{i}");
        assert_eq!(dir.pin(&id), Some(spread(i)), "{id}");
    }
}

#[test]
fn compaction_preserves_every_pin() {
    // 20,000 pins: the overlay holds up to 1,024 changes before the next change compacts.
    let n_base = 20_000u32;
    let limit = overlay_limit(n_base as usize);
    assert_eq!(limit, 1024);
    let first = |i: u32| p((i % 3) as u16, ((i + 1) % 3) as u16);
    let moved = |i: u32| p(((i + 1) % 3) as u16, (i % 3) as u16);
    let mut expected: BTreeMap<String, Placement> = (0..n_base)
        .map(|i| (format!("user-{i}"), first(i)))
        .collect();
    let mut dir = directory(expected.iter().map(|(id, &p)| (id.clone(), p)).collect());
    let mut n_compactions = 0;
    // Rounds of 300 changes, each to a different user: a third re-pin, a third unpin, a third
    // pin new users. Three rounds stay under the limit; the fourth crosses it and compacts.
    for round in 1..=12u32 {
        let changes: Vec<(String, Option<Placement>)> = (0..300)
            .map(|k| {
                let i = round * 1000 + k;
                match k % 3 {
                    0 => (format!("user-{i}"), Some(moved(i))),
                    1 => (format!("user-{i}"), None),
                    _ => (format!("new-{i}"), Some(first(i))),
                }
            })
            .collect();
        for (id, change) in &changes {
            match change {
                Some(placement) => expected.insert(id.clone(), *placement),
                None => expected.remove(id),
            };
        }
        let before = Arc::clone(&dir.base);
        dir = dir.with_pins(changes);
        if !Arc::ptr_eq(&before, &dir.base) {
            n_compactions += 1;
            assert!(
                dir.overlay.is_empty(),
                "round {round}: a compaction empties the overlay"
            );
            assert_eq!(dir.base.len(), expected.len(), "round {round}");
        } else {
            assert!(dir.overlay.len() <= limit, "round {round}");
        }
        check_pins(&dir, &expected, &["user-1001", "new-1000", "nobody"]);
    }
    assert_eq!(
        n_compactions, 3,
        "12 rounds of 300 changes cross the limit 3 times"
    );
}

#[test]
fn export_is_sorted_and_merges_the_overlay_over_the_index() {
    let dir = directory(pins_of(
        ["d", "b", "f", "a", "ユーザー", "Z", "c"].map(|id| (id.to_owned(), p(0, 1))),
    ))
    .with_pins([
        ("b".into(), None),           // hides an indexed pin
        ("c".into(), Some(p(2, 0))),  // re-pins an indexed user
        ("e".into(), Some(p(1, 2))),  // pins between indexed users
        ("0".into(), Some(p(1, 2))),  // before all of them
        ("zz".into(), Some(p(1, 2))), // after the ASCII ones
    ]);
    let exported: Vec<(&str, Placement)> = dir.pins().collect();
    assert_eq!(
        exported,
        [
            ("0", p(1, 2)),
            ("Z", p(0, 1)),
            ("a", p(0, 1)),
            ("c", p(2, 0)),
            ("d", p(0, 1)),
            ("e", p(1, 2)),
            ("f", p(0, 1)),
            ("zz", p(1, 2)),
            ("ユーザー", p(0, 1)),
        ]
    );
    assert_eq!(dir.n_pins(), exported.len());
}

#[test]
fn changing_buckets_moves_unpinned_users_only() {
    let dir = directory(vec![("alice".into(), p(2, 0))]);
    let alice_bucket = bucket_of("alice", 64);
    let bob_bucket = bucket_of("bob", 64);
    assert_ne!(alice_bucket, bob_bucket, "the test needs two buckets");
    let moved = dir.with_buckets([(alice_bucket, p(1, 1)), (bob_bucket, p(1, 1))]);
    assert_eq!(
        moved.lookup("alice").placement,
        p(2, 0),
        "pins override buckets"
    );
    assert_eq!(moved.lookup("bob").placement, p(1, 1));
    assert_eq!(moved.bucket(bob_bucket), p(1, 1));
    let layout = Directory::round_robin(3, 64);
    assert_eq!(
        dir.bucket(bob_bucket),
        layout[bob_bucket as usize],
        "the old one is unchanged"
    );
    assert_eq!(dir.lookup("bob").placement, layout[bob_bucket as usize]);
    assert!(Arc::ptr_eq(&dir.base, &moved.base), "pins are shared");
    let untouched = (0..64).filter(|&b| b != alice_bucket && b != bob_bucket);
    assert!(
        untouched
            .into_iter()
            .all(|b| moved.bucket(b) == dir.bucket(b))
    );
}

#[test]
fn round_robin_layout() {
    assert_eq!(
        Directory::round_robin(3, 8),
        [
            p(0, 1),
            p(1, 2),
            p(2, 0),
            p(0, 1),
            p(1, 2),
            p(2, 0),
            p(0, 1),
            p(1, 2)
        ]
    );
    assert_eq!(Directory::round_robin(1, 4), [p(0, 0); 4]);
    assert_eq!(Directory::round_robin(2, 2), [p(0, 1), p(1, 0)]);
    assert_eq!(Directory::round_robin(5, DEFAULT_BUCKETS).len(), 4096);
}

#[test]
fn serve_from_prefers_home_then_replica_then_fails_open() {
    let placement = p(0, 1);
    let cases = [
        // (eligible datacenters, expected)
        (&[0, 1][..], (0, Reason::Home)),
        (&[0], (0, Reason::Home)),
        (&[1], (1, Reason::Replica)),
        (&[1, 2], (1, Reason::Replica)),
        (&[2], (0, Reason::Fallback)),
        (&[], (0, Reason::Fallback)),
    ];
    for (eligible, expected) in cases {
        assert_eq!(
            serve_from(placement, |dc| eligible.contains(&dc)),
            expected,
            "{eligible:?}"
        );
    }
    // Home and replica the same datacenter, down: still the home.
    assert_eq!(serve_from(p(2, 2), |_| false), (2, Reason::Fallback));
}

#[test]
fn datacenter_names_and_indexes() {
    let dir = directory(vec![]);
    assert_eq!(dir.dc_names(), DCS);
    assert_eq!(dir.dc_index("eu-west"), Some(1));
    assert_eq!(dir.dc_index("mars"), None);
}

#[test]
fn heap_bytes_counts_the_pins() {
    let empty = directory(vec![]).heap_bytes();
    let full = directory(pins_of(
        (0..10_000u16).map(|i| (format!("user-{i}"), p(0, 1))),
    ))
    .heap_bytes();
    // At least the ids' bytes plus an offset and a placement each.
    assert!(full >= empty + 10_000 * (9 + 4 + 4), "{empty} -> {full}");
}

#[test]
fn directories_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Directory>();
}
