#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the targets in fuzz/, on the stable toolchain.
#
#   tools/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#   tools/fuzz/run.sh --runs N [TARGET...]                 (N inputs each, fixed random seed)
#
# The second form is what CI runs: a fixed seed and input count make every run explore much the
# same inputs (coverage feedback keeps it from being bit-for-bit identical), and a finding is
# saved as the input that reproduces it.
#
# Builds the targets with the instrumentation `cargo fuzz` uses (SanitizerCoverage with 8-bit
# counters, PC tables and comparison tracing; no sanitizer, which needs nightly), seeds each
# corpus from committed data (tools/fuzz/seeds.py), and runs each target for the given time.
# Corpora grow in fuzz/corpus/<target> between runs (not committed). A finding stops the run
# with the failing input saved as fuzz/artifacts/<target>/crash-*; reproduce it with
#   fuzz/target/<triple>/release/<target> fuzz/artifacts/<target>/crash-…
# then fix it and keep the input as a regression test in the crate's own tests.
set -euo pipefail
cd "$(dirname "$0")/../.."

budget=(-max_total_time=20)
label="20 s"
runs=""
fresh_corpus=0
if [ "${1:-}" = "--runs" ]; then
    runs="$2"
    label="a fixed seed"
    # Starting from the seeds alone, not from a corpus grown by earlier runs.
    fresh_corpus=1
    shift 2
elif [ $# -gt 0 ]; then
    budget=(-max_total_time="$1")
    label="$1 s"
    shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(fhir_resource search_params fhirpath hl7v2 jwt)
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
# An explicit --target keeps the instrumentation out of build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
unset CARGO_TARGET_DIR
cargo build --locked --release --manifest-path fuzz/Cargo.toml --target "$triple" \
    $(printf -- '--bin %s ' "${targets[@]}")

seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
python3 tools/fuzz/seeds.py "$seeds" >/dev/null

status=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    if [ "$fresh_corpus" = 1 ]; then
        corpus="$seeds/grown-$target"
    fi
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    if [ -n "$runs" ]; then
        # libFuzzer counts the seeds it loads as runs: N inputs beyond them.
        loaded=$(find "$seeds/$target" -type f | wc -l)
        budget=(-runs=$((runs + loaded)) -seed=1)
    fi
    log="$artifacts/last-run.log"
    # -timeout: one input taking 10 s is a finding (a hang); -rss_limit_mb: so is 2 GiB.
    if "fuzz/target/$triple/release/$target" "$corpus" "$seeds/$target" \
        "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
        executed="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1)"
        echo "fuzz $target: ok, $executed inputs with $label, $cov, corpus $(ls "$corpus" | wc -l)"
    else
        status=1
        echo "fuzz $target: FINDING (input saved in $artifacts/)"
        tail -n 60 "$log"
    fi
done
exit $status
