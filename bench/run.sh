#!/usr/bin/env bash
# Builds release binaries and runs the benchmark against them (see bench/README.md).
# Writes bench/results/<UTC date-time>.md and a copy in bench/results/latest.md.
# Extra arguments go to the benchmark binary, e.g. `bench/run.sh --duration-secs 10`.
# Needs PostgreSQL (127.0.0.1:5432, user postgres, trust), RabbitMQ (guest/guest, and
# permission to run rabbitmqctl), and pgbench on PATH.
#
# The machine should be quiet: after building, the script waits (at most
# BENCH_QUIET_WAIT seconds, default 600; 0 = do not wait) until the 1-minute load average is
# below BENCH_QUIET_LOAD (default 1.0), and runs anyway after that; the report states the
# load average either way.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins -p api -p worker -p bench

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
bin_dir="$target_dir/release"

quiet_load="${BENCH_QUIET_LOAD:-1.0}"
quiet_wait="${BENCH_QUIET_WAIT:-600}"
waited=0
while awk -v l="$quiet_load" '{ exit !($1 >= l) }' /proc/loadavg && [ "$waited" -lt "$quiet_wait" ]; do
  if [ $((waited % 60)) -eq 0 ]; then
    echo "waiting for a quiet machine: load average $(cut -d' ' -f1-3 /proc/loadavg) (want < $quiet_load)" >&2
  fi
  sleep 5
  waited=$((waited + 5))
done

stamp="$(date -u +%Y-%m-%d-%H%M)"
mkdir -p bench/results
out="bench/results/$stamp.md"

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
CE_BIN_DIR="$bin_dir" CE_SKIP_BUILD=1 "$bin_dir/bench" --out "$out" "$@"
cp "$out" bench/results/latest.md
echo "results: $out (and bench/results/latest.md)" >&2
