//! The `meridian` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
    meridian::cli::run(meridian::cli::Cli::parse())
}

/// Fixes glibc's mmap threshold at its default (128 KiB), which also fixes its trim threshold,
/// and caps its arenas at one per core, unless `MALLOC_ARENA_MAX` says otherwise.
///
/// Left dynamic, glibc raises both thresholds each time a large block is freed (up to 32 MiB):
/// after the startup builds free theirs (geo index, zones, decision maps), freed memory in the
/// query threads' arenas is never given back, and under hostile traffic the resident set grew
/// by 22 MiB and stayed there; fixed, it stays within 1 MiB of idle
/// (`benches/hostile_memory.rs`, `benches/README.md`).
///
/// Arenas: glibc gives each new thread that allocates an arena of its own, up to eight per
/// core, and an arena keeps the memory freed in its middle. Decision maps are built and
/// widened on short-lived threads, beside the query and control threads, so the maps of each
/// replaced snapshot left holes in a dozen arenas: at 1,000 services over 100 datacenters
/// (`benches/scale/run.sh`) the resident set rose to 962 MB over reloads and health flips
/// while about 700 MB was live; with one arena per core it peaks at 716 MB. Queries allocate
/// next to nothing (the UDP fast path nothing at all), so they hardly contend for arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    /// glibc's default `M_MMAP_THRESHOLD`.
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    let arenas = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    let arenas_set = std::env::var_os("MALLOC_ARENA_MAX").is_some();
    // SAFETY: mallopt only sets allocator parameters; it runs first in main, before any other
    // thread exists, and a failure (returned as 0) leaves glibc's defaults in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        if !arenas_set {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
