#!/usr/bin/env bash
# Run the decoder fuzz targets in fuzz/ (cargo-fuzz, libFuzzer), one at a time.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     default: all, 60 seconds each
#   scripts/fuzz.sh list                       the targets
#
# Each run starts from the committed seeds (fuzz/seeds/TARGET, from scripts/fuzz-seeds.sh)
# and the inputs earlier runs found (fuzz/corpus/TARGET, not committed), and prints the
# executions reached and the result. A crash, hang (a single input over 10 s) or
# over-allocation (one allocation over 512 MiB, or 2 GiB resident) stops the target; the
# input lands in fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run TARGET FILE,
# then keep it as a regression test next to the decoder). Logs: fuzz/logs/TARGET.log.
#
# Environment:
#   FUZZ_RUNS=N               also stop a target after N executions (e.g. 10000000)
#   SLUICE_FUZZ_TARGET_DIR    build directory (default /var/tmp/sluice-target-fuzz; never the
#                             shared target dir of .cargo/config.toml: other builds use it)
#   FUZZ_FLAGS                more libFuzzer flags
#   FUZZ_JOBS=N               N fuzzer processes of the target at once, sharing its corpus
#                             (each reloads what the others found); FUZZ_RUNS and the
#                             figures printed are per process, and the sum is printed too.
#                             Default 1: the machine's cores are shared.
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). Builds are release
# with debug assertions (overflow checks) and AddressSanitizer, which makes -malloc_limit_mb
# work.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR=${SLUICE_FUZZ_TARGET_DIR:-/var/tmp/sluice-target-fuzz}
TARGETS=(pgoutput copy binlog_rows mariadb_gtid mysql_json)
target=${1:-all}
seconds=${2:-60}
case $target in
  list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
  all) run=("${TARGETS[@]}") ;;
  *)
    [[ " ${TARGETS[*]} " == *" $target "* ]] || { echo "fuzz: unknown target $target (try: list)" >&2; exit 2; }
    run=("$target") ;;
esac
build=(cargo +nightly fuzz build -O -a)
[ "${#run[@]}" -eq 1 ] && build+=("${run[0]}")
"${build[@]}" >/dev/null 2>&1 || "${build[@]}"
mkdir -p logs
failed=0
jobs=${FUZZ_JOBS:-1}
for t in "${run[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  start=$(date +%s)
  flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10
         -print_final_stats=1 -artifact_prefix="artifacts/$t/")
  [ -n "${FUZZ_RUNS:-}" ] && flags+=(-runs="$FUZZ_RUNS")
  # shellcheck disable=SC2206 # FUZZ_FLAGS is a list of flags
  flags+=(${FUZZ_FLAGS:-})
  logs=() pids=()
  for ((j = 0; j < jobs; j++)); do
    log=logs/$t.log
    [ "$jobs" -gt 1 ] && log=logs/$t.$j.log
    logs+=("$log")
    cargo +nightly fuzz run -O -a "$t" "corpus/$t" "seeds/$t" -- "${flags[@]}" >"$log" 2>&1 &
    pids+=($!)
  done
  total=0 result=ok
  for j in "${!pids[@]}"; do
    log=${logs[$j]}
    if wait "${pids[$j]}"; then r=ok; else
      r="FAILED: $(grep -m1 -oE 'SUMMARY: .*|deadly signal|Test unit written to .*|run interrupted' "$log" | tail -1 || true)"
      result=$r failed=1
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
    rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo '?')
    [ "$execs" = '?' ] || total=$((total + execs))
    printf '%-13s %12s executions in %5ss (%s/s): %s\n' "$t" "$execs" "$(( $(date +%s) - start ))" "$rate" "$r"
    [ "$r" = ok ] || grep -m1 -A3 'Test unit written' "$log" || true
  done
  [ "$jobs" -gt 1 ] && printf '%-13s %12s executions in all, %s processes: %s\n' "$t" "$total" "$jobs" "$result"
done
exit $failed
