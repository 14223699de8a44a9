#!/usr/bin/env bash
# Tokenization throughput, side by side in one run, on the same documents and tokenizer (Qwen3):
#   openseek    target/release/openseek --partitions JOBS tokenize (end to end: read, tokenize, write shards
#               and the run's Parquet output)
#   limit       Python `tokenizers` encode_batch on RAYON_NUM_THREADS=JOBS (encoding only: the shared Rust
#               core, the limit for our stage)
#   datatrove   datatrove 0.10.1 MegatronDocumentTokenizer, JOBS workers (the peer)
# then the token-id parity of our shards with Python `tokenizers`, and, when the PyTorch venv exists
# (scripts/setup-torch-venv), Megatron's own reader and builder on our shards.
#
#   benches/tokenize/run.sh [FACTOR...]      (default: 1 5; factor K reads K copies of corpus/en)
# Env: OPENSEEK_CORPUS, JOBS (2), TOOLS ("openseek limit datatrove"), REPEAT (1: rounds of all the tools,
# one after the other, since this VM's speed drifts by ±10% over minutes), OPENSEEK_BENCH_VENV (the venv
# of benches/minhash/setup_peers.sh: datatrove, tokenizers, pyarrow).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CORPUS="$(realpath "${OPENSEEK_CORPUS:-$REPO/../shared/corpus}")"
VENV="${OPENSEEK_BENCH_VENV:-$REPO/target/bench-venv}"
MVENV="${OPENSEEK_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/openseek/torch-venv}"
PY="$VENV/bin/python"
BIN="$REPO/target/release/openseek"
JOBS="${JOBS:-2}"
TOOLS="${TOOLS:-openseek limit datatrove}"
REPEAT="${REPEAT:-1}"
TOK="$CORPUS/tokenizers/qwen3/tokenizer.json"
BENCH="$REPO/target/tokenize-bench"
if [ $# -gt 0 ]; then FACTORS=("$@"); else FACTORS=(1 5); fi
[ -x "$PY" ] || "$REPO/benches/minhash/setup_peers.sh"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$BENCH"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%H:%MZ)"
rss() { grep "Maximum resident" "$1" | awk '{printf "%.0f", $NF/1024}'; }
wall() { grep "Elapsed (wall" "$1" | sed 's/.*: //' | awk -F: '{s=0; for(i=1;i<=NF;i++) s=s*60+$i; printf "%.2f", s}'; }

for k in "${FACTORS[@]}"; do
    if [ "$k" = 1 ]; then input="$CORPUS/en"; else
        input="$BENCH/x$k"
        [ -d "$input" ] || "$PY" "$REPO/benches/minhash/make_copies.py" "$CORPUS/en" "$input" "$k" >&2
    fi
    echo "== corpus/en x$k: $input"
    for round in $(seq "$REPEAT"); do
    [ "$REPEAT" = 1 ] || echo "-- round $round"
    for tool in $TOOLS; do
        case $tool in
        openseek)
            out="$BENCH/openseek-x$k"; rm -rf "$out"
            /usr/bin/time -v -o "$BENCH/time-openseek-x$k.txt" "$BIN" --partitions "$JOBS" tokenize \
                --input "$input" --tokenizer "$TOK" --template "{text}<|endoftext|>" --output "$out" \
                >"$BENCH/log-openseek-x$k.txt" 2>&1
            tokens=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print([s for s in r["stages"] if s["name"]=="tokenize"][0]["tokenize"]["tokens"])' "$out/_run/report.json")
            stage_s=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round([s for s in r["stages"] if s["name"]=="tokenize"][0]["tokenize"]["seconds"],2))' "$out/_run/report.json")
            w=$(wall "$BENCH/time-openseek-x$k.txt")
            echo "openseek   x$k: $tokens tokens, wall $w s ($(awk -v t=$tokens -v s=$w 'BEGIN{printf "%.0f", t/s}') tokens/s end to end), tokenize stage $stage_s s ($(awk -v t=$tokens -v s=$stage_s 'BEGIN{printf "%.0f", t/s}') tokens/s), max RSS $(rss "$BENCH/time-openseek-x$k.txt") MB"
            ;;
        limit)
            /usr/bin/time -v -o "$BENCH/time-limit-x$k.txt" env RAYON_NUM_THREADS="$JOBS" \
                "$PY" "$HERE/py_tokenize.py" limit "$TOK" "$input" >"$BENCH/limit-x$k.json"
            echo "limit      x$k: $(cat "$BENCH/limit-x$k.json"), max RSS $(rss "$BENCH/time-limit-x$k.txt") MB"
            ;;
        datatrove)
            out="$BENCH/datatrove-x$k"; rm -rf "$out"
            /usr/bin/time -v -o "$BENCH/time-datatrove-x$k.txt" "$PY" "$HERE/datatrove_tokenize.py" \
                "$input" "$out" "$TOK" --workers "$JOBS" >"$BENCH/datatrove-x$k.json" 2>"$BENCH/log-datatrove-x$k.txt"
            echo "datatrove  x$k: $(tail -1 "$BENCH/datatrove-x$k.json"), wall $(wall "$BENCH/time-datatrove-x$k.txt") s"
            ;;
        esac
    done
    done
    if [[ " $TOOLS " == *" openseek "* ]]; then
        "$PY" "$HERE/py_tokenize.py" parity "$TOK" "$BENCH/openseek-x$k/_run" "$BENCH/openseek-x$k" "<|endoftext|>"
        if [ -x "$MVENV/bin/python" ] && [ "$k" = 1 ]; then
            "$MVENV/bin/python" "$HERE/megatron_check.py" "$BENCH/openseek-x$k" "$BENCH/openseek-x$k/_run" "$TOK" "<|endoftext|>"
        fi
    fi
done
