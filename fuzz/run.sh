#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and writes the figures of the run to
# fuzz/results/latest.md. Not part of CI (.ci/run): it needs the nightly toolchain and takes
# minutes. See docs/security.md, "Testing tools".
#
#   fuzz/run.sh                  # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh # longer
#   fuzz/run.sh url_template     # some targets only
#
# Needs: `rustup toolchain install nightly` and `cargo install cargo-fuzz --locked`.
# Inputs that made a target fail are kept in fuzz/artifacts/<target>/; reproduce one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# Exit status: 0 when no target failed, 1 otherwise, 2 when the build failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "FUZZ_SECONDS must be a positive whole number of seconds" >&2
  exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(email_address url_template json_bodies)
fi
# The shared target directory of the workspace, apart from the normal builds (nightly,
# instrumented for libFuzzer and AddressSanitizer).
target_dir="$root/target/fuzz"
results="$root/fuzz/results"
logs="$results/logs"
mkdir -p "$logs"

fuzz=(cargo +nightly fuzz)
if ! "${fuzz[@]}" --version >/dev/null 2>&1; then
  echo "cargo-fuzz on the nightly toolchain is missing:" >&2
  echo "  rustup toolchain install nightly && cargo install cargo-fuzz --locked" >&2
  exit 2
fi

echo "building the fuzz targets (nightly, AddressSanitizer)" >&2
if ! "${fuzz[@]}" build --target-dir "$target_dir" >"$logs/build.log" 2>&1; then
  tail -n 30 "$logs/build.log" >&2
  echo "build failed; full log: $logs/build.log" >&2
  exit 2
fi

count_files() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }

rows=()
failed=0
for t in "${targets[@]}"; do
  corpus="$root/fuzz/corpus/$t"
  seeds="$root/fuzz/seeds/$t"
  artifacts="$root/fuzz/artifacts/$t"
  dict="$root/fuzz/dicts/$t.dict"
  mkdir -p "$corpus" "$artifacts"
  before=$(count_files "$artifacts")
  extra=()
  [ -f "$dict" ] && extra+=("-dict=$dict")
  log="$logs/$t.log"
  echo "fuzzing $t for ${seconds}s" >&2
  # New inputs go to the first directory (corpus/, not committed); seeds/ is read only.
  "${fuzz[@]}" run --target-dir "$target_dir" "$t" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  if [ -z "$runs" ]; then
    # No final statistics (the target failed): take the last status line, `#N ... exec/s: E`.
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
    execs=$(sed -n 's/.*exec\/s: \([0-9]*\).*/\1/p' <<<"$last")
  fi
  corpus_size=$(count_files "$corpus")
  crashes=$(($(count_files "$artifacts") - before))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes="failed (exit $status, see log)"
  fi
  note=""
  if [ "$status" -ne 0 ]; then
    failed=1
    newest=$(ls -t "$artifacts" 2>/dev/null | head -n 1)
    [ -n "$newest" ] && note="fuzz/artifacts/$t/$newest"
    msg=$(grep -m 1 -E "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" || true)
    [ -n "$msg" ] && echo "$t: $msg" >&2
    panic=$(grep -A 1 -m 1 "panicked at" "$log" | tail -n 1 | cut -c1-200 | tr '|' '/')
    [ -n "$panic" ] && note="$note: $panic"
  fi
  rows+=("| \`$t\` | ${seconds} s | ${runs:-?} | ${execs:-?} | $corpus_size | $crashes | ${note:-} |")
done

{
  echo "# Fuzzing run"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- common api 2>/dev/null || echo ' (with uncommitted changes in common/ or api/)')"
  echo "- toolchain: $(rustc +nightly --version 2>/dev/null), $("${fuzz[@]}" --version 2>/dev/null)"
  echo "- machine: $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg) (builds and tests of others share it); one target at a time, one libFuzzer job each, AddressSanitizer on"
  echo "- command: \`FUZZ_SECONDS=$seconds fuzz/run.sh${*:+ $*}\`"
  echo
  echo "| target | time | runs executed | exec/s | corpus size (files) | crashes | failing input |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Corpus size counts the inputs in fuzz/corpus/<target>/ after the run (kept between runs,"
  echo "not committed). Logs: fuzz/results/logs/."
} >"$results/latest.md"

cat "$results/latest.md"
exit "$failed"
