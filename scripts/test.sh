#!/usr/bin/env bash
# lamina's one test command: `bash scripts/test.sh` (CI runs it through .ci/run).
#
# Steps, in order, stopping at the first failure:
#   setup    install what is missing: the bare-metal target, nightly with miri and rust-src
#   fmt      rustfmt check of the workspace and of core/nostd-check
#   clippy   every target and feature of the workspace, warnings are errors
#   test     unit, integration and doc tests of the workspace (crash, simulation, zero-alloc)
#   nostd    lamina-core in a no_std, no-allocator binary for thumbv7em-none-eabihf
#   loom     the loom models of the lock-free structures
#   miri     the SPSC queue's and the changelog byte ring's tests under Miri with four scheduling
#            seeds, and the CRC32C tests
#   fuzz     the fuzz targets build and their seed files are current
# Each step prints its name and duration; the last line counts the tests run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NOSTD_TARGET=thumbv7em-none-eabihf
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

step_setup() {
    if ! rustup target list --installed | grep -qx "$NOSTD_TARGET"; then
        rustup target add "$NOSTD_TARGET"
    fi
    local component
    for component in rustfmt clippy; do
        if ! rustup component list --installed | grep -q "^$component"; then
            rustup component add "$component"
        fi
    done
    if ! rustup toolchain list | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal
    fi
    for component in miri rust-src; do
        if ! rustup +nightly component list --installed | grep -q "^$component"; then
            rustup +nightly component add "$component"
        fi
    done
    rustc --version
    rustc +nightly --version
}

step_fmt() {
    cargo fmt --all -- --check
    cargo fmt --manifest-path core/nostd-check/Cargo.toml -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
}

step_clippy() {
    cargo clippy --workspace --all-targets --all-features -- -D warnings
}

step_test() {
    cargo test --workspace --all-features
}

step_nostd() {
    local args=(--release --manifest-path core/nostd-check/Cargo.toml
        --target "$NOSTD_TARGET" --target-dir target/nostd)
    cargo clippy "${args[@]}" -- -D warnings
    cargo build "${args[@]}"
    # The calls into the core must have survived section garbage collection, or the link proved
    # nothing.
    local bin="target/nostd/$NOSTD_TARGET/release/lamina-nostd-check"
    if ! grep -aq '11lamina_core' "$bin"; then
        echo "error: $bin holds no lamina_core code" >&2
        return 1
    fi
    echo "no_std proof: $bin ($(wc -c <"$bin") bytes) links lamina-core without std or an allocator"
}

step_loom() {
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
        cargo test -p lamina-loom-tests --release --target-dir target/loom
}

step_miri() {
    # The code with `unsafe`: the SPSC queue and the changelog byte ring under four scheduling
    # seeds, the CRC32C instruction path once.
    MIRIFLAGS="-Zmiri-many-seeds=0..4" cargo +nightly miri test -p lamina-core --lib spsc
    MIRIFLAGS="-Zmiri-many-seeds=0..4" cargo +nightly miri test -p lamina-core --lib changelog
    cargo +nightly miri test -p lamina-core --lib crc
}

step_fuzz() {
    # The fuzz targets build, and the checked-in seeds are what the format makes today.
    cargo test --manifest-path fuzz/Cargo.toml
}

STEPS=(setup fmt clippy test nostd loom miri fuzz)
NAMES=()
TIMES=()

# Microseconds since the epoch, and a microsecond span as seconds with one decimal.
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
seconds() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }
TOTAL_START=$(now_us)

# Adds up the "test result:" lines of the test and loom steps. (Miri runs a subset of the same
# tests again, its seeds in parallel with their output interleaved, so it is not counted.)
count_tests() {
    cat "$LOGS/test.log" "$LOGS/loom.log" 2>/dev/null |
        grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed; [0-9]+ ignored' |
        awk '{ p += $4; f += $6; i += $8 } END { printf "%d %d %d\n", p, f, i }'
}

summary() {
    local failed_step=${1:-}
    local total
    total=$(seconds $(($(now_us) - TOTAL_START)))
    echo
    echo "==> summary"
    local i
    for i in "${!NAMES[@]}"; do
        printf '    %-7s %7s s\n' "${NAMES[$i]}" "${TIMES[$i]}"
    done
    local passed failed ignored
    read -r passed failed ignored < <(count_tests)
    if [[ -n $failed_step ]]; then
        echo "steps: FAILED at $failed_step after $total s"
        # A step can fail without a failing test (fmt, clippy, a build): still count one failure.
        if ((failed == 0)); then failed=1; fi
    else
        echo "steps: all ${#STEPS[@]} passed in $total s"
    fi
    echo "tests: $passed passed, $failed failed, $ignored skipped"
}

for step in "${STEPS[@]}"; do
    echo
    echo "==> $step"
    start=$(now_us)
    set +e
    (set -e; "step_$step") 2>&1 | tee "$LOGS/$step.log"
    status=${PIPESTATUS[0]}
    set -e
    elapsed=$(seconds $(($(now_us) - start)))
    NAMES+=("$step")
    TIMES+=("$elapsed")
    if ((status != 0)); then
        echo "==> $step FAILED (exit $status) after $elapsed s"
        summary "$step"
        exit "$status"
    fi
    echo "==> $step ok in $elapsed s"
done

summary
