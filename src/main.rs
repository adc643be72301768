//! The `meridian` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    fix_malloc_thresholds();
    meridian::cli::run(meridian::cli::Cli::parse())
}

/// Fixes glibc's mmap threshold at its default (128 KiB), which also fixes its trim threshold.
///
/// Left dynamic, glibc raises both each time a large block is freed (up to 32 MiB): after the
/// startup builds free theirs (geo index, zones, decision maps), freed memory in the query
/// threads' arenas is never given back, and under hostile traffic the resident set grew by
/// 22 MiB and stayed there; fixed, it stays within 1 MiB of idle
/// (`benches/hostile_memory.rs`, `benches/README.md`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn fix_malloc_thresholds() {
    /// glibc's default `M_MMAP_THRESHOLD`.
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets allocator parameters; it runs first in main, before any other
    // thread exists, and a failure (returned as 0) leaves glibc's defaults in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_malloc_thresholds() {}
