//! User directory benchmarks: what 10 million pins cost to build and hold, and what a lookup
//! costs with them.
//!
//! Run with `cargo bench --bench directory`; set `DIRECTORY_BENCH_PINS` for a smaller (or
//! larger) directory, e.g. `DIRECTORY_BENCH_PINS=100000` for a quick run. The one-off figures
//! (build time, heap bytes, resident memory, export and change costs) go to stderr; criterion
//! times only the lookups:
//! - `lookup/pinned` and `lookup/unpinned` repeat one id, so the directory's lines stay in
//!   cache: the cost of the code itself. `lookup/unpinned-with-overlay` adds the probe of the
//!   overlay of recent changes (here 1,000).
//! - `lookup/*-random` cycle through a million random ids, so most probes miss the caches, as
//!   they do for real traffic over millions of users.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use meridian::directory::{Directory, Placement, Source};

/// Pins when `DIRECTORY_BENCH_PINS` is not set.
const DEFAULT_PINS: usize = 10_000_000;
/// Datacenters the pins are spread over.
const N_DCS: u16 = 5;
/// How many distinct ids the random-lookup benchmarks cycle through (a power of two).
const N_RANDOM: usize = 1 << 20;

fn directory(c: &mut Criterion) {
    let n_pins = std::env::var("DIRECTORY_BENCH_PINS")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .expect("DIRECTORY_BENCH_PINS is a number")
        })
        .unwrap_or(DEFAULT_PINS);
    assert!(n_pins > 0, "DIRECTORY_BENCH_PINS must be at least 1");
    let mut rng = SplitMix(42);

    let at_start = Memory::now();
    let pins = shuffled_pins(n_pins, &mut rng);
    let with_input = Memory::now();
    let names: Vec<String> = (0..N_DCS).map(|i| format!("dc-{i}")).collect();
    let started = Instant::now();
    let dir = Directory::new(names, Directory::round_robin(N_DCS, 4096), pins);
    let build = started.elapsed();
    let built = Memory::now();
    assert_eq!(dir.n_pins(), n_pins);

    eprintln!("directory: {n_pins} pins over {N_DCS} datacenters, 4096 buckets");
    eprintln!("  build (Directory::new, unsorted input): {build:.2?}");
    eprintln!(
        "  heap_bytes: {} MB ({:.1} bytes a pin)",
        dir.heap_bytes() / 1_000_000,
        dir.heap_bytes() as f64 / n_pins.max(1) as f64
    );
    eprintln!(
        "  RSS: {} MB at start, {} MB with the input built, {} MB after the build (input \
         consumed); peak {} MB",
        at_start.rss_kb / 1000,
        with_input.rss_kb / 1000,
        built.rss_kb / 1000,
        built.peak_kb / 1000,
    );

    let started = Instant::now();
    let exported = dir.pins().count();
    eprintln!(
        "  export (pins(), sorted by id): {:.2?} for {exported} pins",
        started.elapsed()
    );
    changes(&dir, n_pins, &mut rng);

    let pinned = format!("user-{}", n_pins / 2);
    assert_eq!(dir.lookup(&pinned).source, Source::Pin);
    assert_eq!(dir.lookup("visitor-4242").source, Source::Bucket);
    let random_pinned: Vec<String> = (0..N_RANDOM)
        .map(|_| format!("user-{}", rng.below(n_pins)))
        .collect();
    let random_unpinned: Vec<String> = (0..N_RANDOM)
        .map(|_| format!("visitor-{}", rng.next()))
        .collect();

    let mut group = c.benchmark_group("directory");
    group.bench_function("lookup/pinned", |b| {
        b.iter(|| dir.lookup(black_box(&pinned)))
    });
    group.bench_function("lookup/unpinned", |b| {
        b.iter(|| dir.lookup(black_box("visitor-4242")))
    });
    // With recent changes in the overlay, every lookup probes it first.
    let changed = dir.with_pins((0..1000).map(|i| (format!("changed-{i}"), Some(spread(i)))));
    group.bench_function("lookup/unpinned-with-overlay", |b| {
        b.iter(|| changed.lookup(black_box("visitor-4242")))
    });
    for (name, ids) in [
        ("lookup/pinned-random", &random_pinned),
        ("lookup/unpinned-random", &random_unpinned),
    ] {
        let mut k = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                k = (k + 1) & (N_RANDOM - 1);
                dir.lookup(black_box(&ids[k]))
            })
        });
    }
    group.finish();
}

/// Times what pin changes cost: one change on a fresh directory, one change on a growing
/// overlay, the change that compacts the overlay into a new index, and the average over many
/// changes made one at a time, compactions included.
fn changes(dir: &Directory, n_pins: usize, rng: &mut SplitMix) {
    // Re-pins an existing user elsewhere, so the index keeps its size across compactions.
    let mut change = |i: usize| {
        let placement = spread(i);
        let moved = Placement {
            home: placement.replica,
            replica: placement.home,
        };
        (format!("user-{}", rng.below(n_pins)), Some(moved))
    };
    let timed = |dir: &Directory, changes: Vec<(String, Option<Placement>)>| {
        let started = Instant::now();
        let res = dir.with_pins(changes);
        (res, started.elapsed())
    };
    let (_, one) = timed(dir, vec![change(1)]);
    eprintln!("  with_pins, 1 change, empty overlay: {one:.2?}");
    // Grow the overlay a batch at a time until a batch compacts it away, which shows as a drop
    // in heap use (the index keeps its size and the overlay empties).
    let batch = 1024;
    let mut current = dir.clone();
    for n_batches in 1.. {
        let changes = (0..batch).map(&mut change).collect();
        let (res, took) = timed(&current, changes);
        if res.heap_bytes() < current.heap_bytes() {
            eprintln!(
                "  with_pins, {batch} changes that cross the overlay limit (a compaction into \
                 {n_pins} pins): {took:.2?}"
            );
            break;
        }
        if n_batches * batch >= n_pins {
            eprintln!("  no compaction within {n_pins} changes");
            break;
        }
        if n_batches.is_power_of_two() {
            let (_, one) = timed(&res, vec![change(2)]);
            let overlay = n_batches * batch;
            eprintln!("  with_pins, 1 change, overlay of about {overlay} entries: {one:.2?}");
        }
        current = res;
    }
    let n_changes = 20_000;
    let mut current = dir.clone();
    let started = Instant::now();
    for i in 0..n_changes {
        current = current.with_pins([change(i)]);
    }
    let took = started.elapsed();
    eprintln!(
        "  with_pins, {n_changes} changes one at a time, compactions included: {took:.2?} ({:.1?} \
         a change)",
        took / n_changes as u32
    );
}

/// `n` pins, `user-0` to `user-{n-1}`, spread over the datacenters, in random order.
///
/// The order is shuffled before the ids are allocated, so their strings lie in memory in the
/// vector's order, as they do when a loader reads an unsorted file. (Shuffling after allocating
/// would have `Directory::new` free 10 million small strings in random order, which costs the
/// allocator seconds that no real loader pays.)
fn shuffled_pins(n: usize, rng: &mut SplitMix) -> Vec<(String, Placement)> {
    let mut order: Vec<usize> = (0..n).collect();
    // Fisher-Yates.
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
        .into_iter()
        .map(|i| (format!("user-{i}"), spread(i)))
        .collect()
}

/// Pin `i`'s placement: every (home, replica) pair of distinct datacenters in turn.
fn spread(i: usize) -> Placement {
    let n = usize::from(N_DCS);
    let home = i % n;
    let replica = (home + 1 + (i / n) % (n - 1)) % n;
    Placement {
        home: home as u16,
        replica: replica as u16,
    }
}

/// Resident memory from `/proc/self/status` (kB, so no page size is assumed), with the peak.
struct Memory {
    rss_kb: u64,
    peak_kb: u64,
}

impl Memory {
    fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kb: field("VmRSS:"),
            peak_kb: field("VmHWM:"),
        }
    }
}

/// A small deterministic generator, so runs are comparable.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = directory
}
criterion_main!(benches);
