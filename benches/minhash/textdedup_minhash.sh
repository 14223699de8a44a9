#!/usr/bin/env bash
# text-dedup 0.4.0 MinHash-LSH near-duplicate removal over a directory of parquet files.
#
#   textdedup_minhash.sh INPUT_DIR WORK_DIR REMOVED_IDS_FILE
#
# Runs `python -m text_dedup.minhash` (the in-memory `datasets` variant, not the Spark one) with
# 14 bands x 8 rows (num_perm 112), 5-grams, xxh3 and NUM_PROC processes (default 2), loading the files
# with `load_dataset("parquet", data_files=..., split="train")` (no --local: that flag means
# load_from_disk). The kept dataset is saved with save_to_disk under WORK_DIR/output; WORK_DIR is wiped
# first, and the HF datasets cache lives under it so that every run converts the parquet files afresh.
# Then REMOVED_IDS_FILE gets the input ids minus the kept ids, one per line, sorted, and
# REMOVED_IDS_FILE.members gets `id<TAB>cluster root id` for every document of a duplicate cluster, from
# the union-find that --debug pickles to WORK_DIR/output/uf.pkl (compare.py uses it to compare
# clusterings whichever member a tool keeps). MEMBERS=0 leaves --debug off.
#
# STEP=run does only the dedup, STEP=ids only the id files (run.sh times the first alone); default: both.
#
# Note: text-dedup first drops every document with fewer than --min_length (default 5) tokens of
# re.split(r"\W", text.lower()); those count as removed too, and are also listed in
# REMOVED_IDS_FILE.short (MIN_LENGTH=0 in the environment turns that filter off).
# text-dedup's --seed is accepted but unused in 0.4.0 (the permutations come from a fixed seed 42).
set -euo pipefail
if [ $# -ne 3 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${OPENSEEK_BENCH_VENV:-$REPO/target/bench-venv}"
PY="$VENV/bin/python"
IN="$(realpath "$1")"
WORK="$(realpath -m "$2")"
REMOVED="$(realpath -m "$3")"
NUM_PROC="${NUM_PROC:-2}"
MIN_LENGTH="${MIN_LENGTH:-5}"
MEMBERS="${MEMBERS:-1}"
STEP="${STEP:-all}"

if [ "$STEP" = all ] || [ "$STEP" = run ]; then
    rm -rf "$WORK"
    mkdir -p "$WORK"
    export HF_HOME="$WORK/hf-home" HF_DATASETS_CACHE="$WORK/hf-cache" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
    debug=--no-debug
    [ "$MEMBERS" = 1 ] && debug=--debug
    start=$(date +%s.%N)
    # run in WORK so that nothing lands in the caller's directory
    (cd "$WORK" && "$PY" -m text_dedup.minhash \
        --path parquet \
        --data_files "$IN/*.parquet" \
        --split train \
        --cache_dir "$WORK/hf-cache" \
        --column text \
        --idx_column id \
        --output "$WORK/output" \
        --num_perm 112 \
        --ngram 5 \
        --min_length "$MIN_LENGTH" \
        --b 14 \
        --r 8 \
        --hash_func xxh3 \
        --num_proc "$NUM_PROC" \
        $debug)
    end=$(date +%s.%N)
    echo "text-dedup wall time: $(echo "$end - $start" | bc -l | xargs printf '%.2f') s" >&2
fi

if [ "$STEP" = all ] || [ "$STEP" = ids ]; then
    "$PY" - "$IN" "$WORK/output" "$REMOVED" "$MIN_LENGTH" <<'PY'
import glob, os, pickle, re, sys
import pyarrow.parquet as pq
from datasets import load_from_disk

inp, out, removed_path, min_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
non_alpha = re.compile(r"\W", re.UNICODE)  # as text_dedup.minhash.NON_ALPHA
ids, short = [], []
for f in sorted(glob.glob(f"{inp}/*.parquet")):
    t = pq.read_table(f, columns=["id", "text"])
    for i, text in zip(t.column("id").to_pylist(), t.column("text").to_pylist()):
        ids.append(i)
        if len(non_alpha.split(text.lower())) < min_length:
            short.append(i)
kept = set(load_from_disk(out)["id"])
removed = sorted(set(ids) - kept)
with open(removed_path, "w") as fh:
    fh.writelines(f"{i}\n" for i in removed)
with open(removed_path + ".short", "w") as fh:
    fh.writelines(f"{i}\n" for i in sorted(short))
uf_path = os.path.join(out, "uf.pkl")
if os.path.exists(uf_path):
    with open(uf_path, "rb") as fh:
        uf = pickle.load(fh)  # text_dedup.utils.UnionFind over the original ids
    rows = sorted(f"{x}\t{uf.find(x)}\n" for x in list(uf.parent))
    with open(removed_path + ".members", "w") as fh:
        fh.writelines(rows)
print(f"text-dedup: {len(ids)} documents in, {len(kept)} kept, {len(removed)} removed "
      f"({len(short)} of them by the min_length={min_length} pre-filter), ids in {removed_path}", file=sys.stderr)
PY
fi
