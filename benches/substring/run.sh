#!/usr/bin/env bash
# substring_dedup on the whole shared corpus (en + zh, ~160 MB of text) and on 5x that (the corpus and
# four copies whose letters and CJK ideographs are rotated, so that each copy repeats within itself
# exactly as the corpus does and shares almost nothing with the others: benches/substring/rotate.py).
#
#   benches/substring/run.sh [WORK_DIR]        (default target/substring-bench)
#
# Each run: target/release/openseek --partitions P run <pipeline> --fresh under /usr/bin/time -v (wall
# clock, peak RSS), the stage's own timings from report.json (join, suffix arrays, merge, marking,
# removal as the output is written). Runs: 1x and 5x on 1 and 2 threads in one part, and 5x cut into
# parts (memory_mb 1024: parts of ~180 MB) on 2 threads; RUNS="x1-t2 ..." picks some. Prints one line
# of JSON a run.
# Needs a release build (cargo build --release) and the corpus ($OPENSEEK_CORPUS, default ../shared/corpus).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=$(realpath -m "${1:-target/substring-bench}")
OPENSEEK=$(realpath "${OPENSEEK:-target/release/openseek}")
CORPUS=$(realpath "${OPENSEEK_CORPUS:-../shared/corpus}")
mkdir -p "$WORK"

# The inputs, once: the corpus as Parquet (id, text, dataset), and four rotated copies.
if [ ! -f "$WORK/x1/done" ]; then
  rm -rf "$WORK/x1" "$WORK/x5" "$WORK/jsonl"
  mkdir -p "$WORK/jsonl"
  for lang in en zh; do
    cat > "$WORK/export-$lang.yaml" <<YAML
name: export-$lang
input: {path: $CORPUS/$lang, id: id, name: corpus-$lang}
output: {path: $WORK/jsonl/$lang, format: jsonl}
stages:
  - sql: "SELECT id, text, dataset FROM input"
YAML
    "$OPENSEEK" run "$WORK/export-$lang.yaml" --fresh > /dev/null
  done
  cat "$WORK"/jsonl/en/data/*.jsonl "$WORK"/jsonl/zh/data/*.jsonl > "$WORK/jsonl/copy-0.jsonl"
  for k in 1 2 3 4; do
    python3 benches/substring/rotate.py "$k" < "$WORK/jsonl/copy-0.jsonl" > "$WORK/jsonl/copy-$k.jsonl"
  done
  for x in 1 5; do
    glob="$WORK/jsonl/copy-0.jsonl"
    [ "$x" = 5 ] && glob="$WORK/jsonl/copy-*.jsonl"
    cat > "$WORK/pack-x$x.yaml" <<YAML
name: pack-x$x
input: {path: "$glob", format: jsonl, id: id}
output: {path: $WORK/x$x, format: parquet}
stages:
  - sql: "SELECT id, text, dataset FROM input"
YAML
    "$OPENSEEK" run "$WORK/pack-x$x.yaml" --fresh > /dev/null
  done
  touch "$WORK/x1/done"
fi

# run NAME X THREADS STAGE_OPTIONS
run() {
  local name=$1 x=$2 threads=$3 opts=$4
  cat > "$WORK/$name.yaml" <<YAML
name: $name
input: {path: "$WORK/x$x/data/*.parquet", id: id}
output: {path: $WORK/out-$name, format: parquet}
stages:
  - substring_dedup: $opts
YAML
  /usr/bin/time -v "$OPENSEEK" --partitions "$threads" run "$WORK/$name.yaml" --fresh \
    > "$WORK/log-$name.txt" 2> "$WORK/time-$name.txt" &
  local tpid=$! peak_anon=0 cpid a
  # Peak RSS counts the mapped text and suffix-array files the kernel may drop at will; RssAnon,
  # sampled every 0.2 s, is the heap alone.
  while kill -0 "$tpid" 2>/dev/null; do
    cpid=$(pgrep -P "$tpid" | head -1 || true)
    if [ -n "$cpid" ]; then
      a=$(awk '/^RssAnon/ {print $2}' "/proc/$cpid/status" 2>/dev/null || true)
      [ -n "$a" ] && [ "$a" -gt "$peak_anon" ] && peak_anon=$a
    fi
    sleep 0.2
  done
  wait "$tpid"
  python3 - "$WORK" "$name" "$threads" "$peak_anon" <<'PY'
import json, re, sys
work, name, threads, anon = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) * 1024
t = open(f"{work}/time-{name}.txt").read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1)
secs = 0.0
for part in wall.split(":"):
    secs = secs * 60 + float(part)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) * 1024
r = json.load(open(f"{work}/out-{name}/report.json"))
s = next(s for s in r["stages"] if s["name"] == "substring_dedup")
x = s["substring"]
text = s["bytes_in"]
print(json.dumps({
    "run": name, "threads": threads, "documents": s["rows_in"], "text_mb": round(text / 1e6, 1),
    "parts": x["parts"], "wall_s": round(secs, 1),
    "join_s": round(x["seconds_join"], 2), "suffix_arrays_s": round(x["seconds_suffix_arrays"], 2),
    "merge_s": round(x["seconds_merge"], 2), "mark_s": round(x["seconds_mark"], 2),
    "remove_and_write_s": round(x["seconds_remove"], 2),
    "peak_rss_mb": round(rss / 1e6), "rss_per_text_byte": round(rss / text, 2),
    "peak_anon_mb": round(anon / 1e6), "anon_per_text_byte": round(anon / text, 2),
    "spans": x["duplicate_spans"], "bytes_removed": x["bytes_removed"],
    "removed_share": round(x["bytes_removed"] / text, 4),
    "too_short": x["documents_too_short"],
}))
PY
}

RUNS=${RUNS:-x1-t1 x1-t2 x5-t1 x5-t2 x5-parts-t2}
for r in $RUNS; do
  case $r in
    x1-t1) run x1-t1 1 1 "{min_bytes: 100}" ;;
    x1-t2) run x1-t2 1 2 "{min_bytes: 100}" ;;
    x5-t1) run x5-t1 5 1 "{min_bytes: 100, memory_mb: 8192}" ;;
    x5-t2) run x5-t2 5 2 "{min_bytes: 100, memory_mb: 8192}" ;;
    x5-parts-t2) run x5-parts-t2 5 2 "{min_bytes: 100, memory_mb: 1024}" ;;
    *) echo "unknown run $r" >&2; exit 1 ;;
  esac
done
