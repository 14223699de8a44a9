#!/usr/bin/env bash
# gaoya 0.2.2 against our MinHash on the same shingles of corpus/en (see src/main.rs).
#
# Usage: benches/gaoya/run.sh [REPEATS]     (env: OPENSEEK_CORPUS, default ../shared/corpus)
# Needs the bench virtualenv of benches/minhash/setup_peers.sh (pyarrow) to turn Parquet into JSONL.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CORPUS="${OPENSEEK_CORPUS:-$REPO/../shared/corpus}"
VENV="${OPENSEEK_BENCH_VENV:-$REPO/target/bench-venv}"
WORK="$REPO/target/gaoya-bench"
mkdir -p "$WORK"
[ -x "$VENV/bin/python" ] || "$REPO/benches/minhash/setup_peers.sh"
TEXTS="$WORK/corpus-en.jsonl"
if [ ! -s "$TEXTS" ]; then
    "$VENV/bin/python" - "$CORPUS/en" "$TEXTS.tmp" <<'PY'
import glob, json, sys
import pyarrow.parquet as pq
with open(sys.argv[2], "w") as out:
    for f in sorted(glob.glob(sys.argv[1] + "/*.parquet")):
        for text in pq.read_table(f, columns=["text"]).column("text").to_pylist():
            out.write(json.dumps({"text": text}) + "\n")
PY
    mv "$TEXTS.tmp" "$TEXTS"
fi
CARGO_TARGET_DIR="$WORK/target" cargo build --release --locked \
    --manifest-path "$REPO/benches/gaoya/Cargo.toml"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
"$WORK/target/release/gaoya-compare" "$TEXTS" "${1:-3}"
