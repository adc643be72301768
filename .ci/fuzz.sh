#!/usr/bin/env bash
# Every fuzz target of fuzz/ (cargo-fuzz, nightly) for a bounded time each: FUZZ_SECONDS
# (default 60), FUZZ_TARGETS (default every target `cargo fuzz list` names).
# Each run starts from the kept inputs (fuzz/seeds/<target>/ and fuzz/regressions/<target>/)
# and writes what it finds to a scratch corpus, so the checkout stays clean.
# A crash fails the run and leaves its input in fuzz/artifacts/<target>/: keep it under
# fuzz/regressions/<target>/ with the fix (tests/it/fuzz.rs runs every kept input).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi
cd fuzz
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
for target in $targets; do
    cargo +nightly fuzz build "$target" 2>&1 | tail -n 1
done
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
    mkdir -p "$scratch/$target"
    kept=()
    for dir in seeds regressions; do
        if [ -d "$dir/$target" ]; then kept+=("$dir/$target"); fi
    done
    echo "fuzz: $target for ${seconds}s"
    # -rss_limit_mb: a leak or a blow-up fails the run as a crash would.
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "${kept[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1; then
        tail -n 60 "$scratch/$target.log" >&2
        echo "fuzz: $target failed; its input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$scratch/$target.log" | tr '\n' ' '
    echo
done
