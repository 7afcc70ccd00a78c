#!/usr/bin/env bash
# Instruction counts of pgoutput → Arrow decoding (benches/decode.rs, 100,000 rows per workload),
# counted by callgrind inside `run` only: repeatable on a busy machine, unlike wall-clock time.
#   scripts/bench-decode-instructions.sh [DECODE_BENCH_BINARY]
# Without an argument the release bench of this checkout is built and measured. Prints the
# instructions per row of the narrow and of the 20-column workload.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"
command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
BIN=${1:-}
if [ -z "$BIN" ]; then
  BIN=$(cargo bench --bench decode --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="decode" and m.get("executable"): print(m["executable"])' | tail -n 1)
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for workload in narrow_row mixed_20_columns; do
  SLUICE_DECODE_ONCE=1 SLUICE_DECODE_ONLY=$workload valgrind --tool=callgrind --collect-atstart=no \
    --toggle-collect='*decode::run*' --callgrind-out-file="$OUT/$workload.out" "$BIN" >/dev/null 2>"$OUT/$workload.log"
  ir=$(grep -E '^(summary|totals):' "$OUT/$workload.out" | head -n 1 | awk '{print $2}')
  echo "$workload: $ir instructions, $((ir / 100000)) per row"
done
