#!/usr/bin/env bash
# fuzz/run.sh: builds and runs every fuzz target (or the ones named) for SECONDS
# each (default 60), one at a time on one core, then prints executions, speed and
# crashes per target. Exits non-zero if any target crashed. Needs the nightly
# toolchain; installs cargo-fuzz if missing.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#   FUZZ_RUNS=10000000 fuzz/run.sh 0 frame_decode   # a number of executions instead
#   FUZZ_SANITIZER=none fuzz/run.sh ...             # no AddressSanitizer (several
#       times faster; the workspace forbids unsafe code, so ASan watches only the
#       dependencies; panics and overflow checks stay on); own build directory
#   FUZZ_TRACE_COMPARES=0 fuzz/run.sh ...           # no comparison tracing: for
#       public_value, whose bignum loops spent 75% of its time reporting their
#       compares to libFuzzer; own build directory
#   FUZZ_ARGS='-entropic_scale_per_exec_time=1' fuzz/run.sh ...   # more libFuzzer
#       flags (this one: slow inputs are mutated less often; for group_log,
#       whose inputs that fill a link's share cost 500 receives each)
#
# New coverage goes to fuzz/work/<target>/ (ignored by git); the checked-in
# fuzz/corpus/<target>/ is read, never written. Crashes land in
# fuzz/artifacts/<target>/; minimise one with `cargo +nightly fuzz tmin`, then copy
# it into fuzz/corpus/<target>/ so the stable corpus test replays it forever.
set -euo pipefail
cd "$(dirname "$0")"

budget=${1:-60}
shift || true
runs=${FUZZ_RUNS:--1}
max_len=${FUZZ_MAX_LEN:-4096}
sanitizer=${FUZZ_SANITIZER:-address}
trace_compares=${FUZZ_TRACE_COMPARES:-1}
read -r -a extra <<<"${FUZZ_ARGS:-}"
build=(-a -s "$sanitizer")
target_dir=target
if [ "$sanitizer" != address ]; then
    target_dir+="-$sanitizer"
fi
if [ "$trace_compares" = 0 ]; then
    build+=(--no-trace-compares)
    target_dir+="-notc"
fi
if [ "$target_dir" != target ]; then
    build+=(--target-dir "$target_dir")
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz/run.sh needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Debug assertions on: overflow checks catch arithmetic on untrusted lengths.
cargo +nightly fuzz build "${build[@]}" >&2

status=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "work/$target" "corpus/$target" "artifacts/$target"
    log="work/$target.log"
    echo "== $target: ${budget}s, runs ${runs}, sanitizer ${sanitizer}" >&2
    before=$(find "artifacts/$target" -type f | wc -l)
    set +e
    cargo +nightly fuzz run "${build[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$budget" -runs="$runs" -max_len="$max_len" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" "${extra[@]}" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$(($(find "artifacts/$target" -type f | wc -l) - before))
    if [ "$rc" -ne 0 ]; then
        status=1
        grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -5 >&2
    fi
    summary+=("$(printf '%-20s %14s %10s %8s %s' "$target" "${execs:-?}" "${speed:-?}" "$crashes" \
        "$([ "$rc" -eq 0 ] && echo ok || echo "CRASH (exit $rc, see fuzz/$log)")")")
done

printf '%-20s %14s %10s %8s %s\n' target execs execs/s crashes result
printf '%s\n' "${summary[@]}"
exit "$status"
