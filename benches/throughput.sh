#!/usr/bin/env bash
# Measures, in one run on the same files:
#  (a) the quickstart's rule-filter stages over all of <corpus>/en, end to end (read → filters → write),
#      on 1 and 2 cores (median of 3 runs), in MB of text per second per core, with peak RSS; and over the corpus repeated
#      10 times, to show that memory stays flat;
#  (b) chinese_convert t2s against the OpenCC command line on the corpus's Traditional documents.
# Usage: benches/throughput.sh [CORPUS_DIR]   (default: $OPENSEEK_CORPUS or ../shared/corpus)
# Needs GNU time (apt-get install time) and opencc (scripts/install-test-deps installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=$(realpath "${1:-${OPENSEEK_CORPUS:-../shared/corpus}}")
# PROFILE=dev measures the dev build (every crate at opt-level 2) instead of the release build.
if [ "${PROFILE:-release}" = dev ]; then
  cargo build --quiet
  bin=$PWD/target/debug/openseek
else
  cargo build --release --quiet
  bin=$PWD/target/release/openseek
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RUST_LOG=warn

# The quickstart's stages, with the input swapped.
stages() { sed -n '/^stages:/,$p' pipelines/quickstart.yaml; }
pipeline() { # name input-path
  { echo "name: $1"; echo "input: {path: $2, id: id}"; stages; } > "$work/$1.yaml"
}
text_mb() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['stages'][0]['bytes_out']/1e6)" "$1"; }
rows() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['rows_read'], r['rows_written'], r['rows_rejected'])" "$1"; }

mkdir -p "$work/en10"
for i in $(seq 0 9); do for f in "$corpus"/en/*.parquet; do ln -s "$f" "$work/en10/copy$i-$(basename "$f")"; done; done
pipeline en "$corpus/en"
pipeline en10 "$work/en10"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo
echo "(a) quickstart rule filters, read -> filters -> write (parquet zstd)"
printf '%-22s %6s %10s %8s %12s %10s %s\n' input cores text_MB wall_s MB/s/core peak_MB rows_read/written/rejected
for spec in "en 1" "en 2" "en10 2"; do
  set -- $spec
  out="$work/out-$1-$2"
  # 1 core: pinned with taskset, so that reader, function and writer threads share one core.
  pin=""; [ "$2" = 1 ] && pin="taskset -c 0"
  # Three runs, fresh each time: the median wall time and the largest peak RSS (the VM is noisy).
  for r in 1 2 3; do
    rm -rf "$out"
    /usr/bin/time -f "%e %M" -o "$work/time-$r" $pin "$bin" --partitions "$2" run "$work/$1.yaml" --output "$out" > /dev/null
  done
  wall=$(cat "$work"/time-? | cut -d' ' -f1 | sort -n | sed -n 2p)
  kb=$(cat "$work"/time-? | cut -d' ' -f2 | sort -n | tail -1)
  mb=$(text_mb "$out/report.json")
  printf '%-22s %6s %10.1f %8.2f %12.1f %10.0f %s\n' "$1" "$2" "$mb" "$wall" "$(echo "$mb / $wall / $2" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$(rows "$out/report.json")"
done

echo
echo "(b) Traditional -> Simplified on the corpus's Hant documents"
python3 - "$corpus" "$work" <<'PY'
import gzip, json, pathlib, sys
corpus, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
docs = []
for p in sorted((corpus / "zh").glob("*.jsonl.gz")):
    with gzip.open(p, "rt", encoding="utf-8") as f:
        docs += [d for d in map(json.loads, f) if d["script"] == "Hant"]
with open(work / "hant.jsonl", "w", encoding="utf-8") as f:
    for d in docs:
        f.write(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n")
with open(work / "hant.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(d["text"] for d in docs))
print(f"{len(docs)} documents, {sum(len(d['text'].encode()) for d in docs) / 1e6:.1f} MB of text")
PY
printf '%-44s %8s %10s %10s\n' tool wall_s MB/s peak_MB
mb=$(python3 -c "import os,sys; print(os.path.getsize(sys.argv[1])/1e6)" "$work/hant.txt")
/usr/bin/time -f "%e %M" -o "$work/time" taskset -c 0 opencc -c t2s.json -i "$work/hant.txt" -o "$work/hans.txt"
read -r wall kb < "$work/time"
printf '%-44s %8.2f %10.1f %10.0f\n' "opencc $(opencc --version 2>&1 | grep -o '[0-9.]*' | head -1) CLI (plain text in/out, 1 thread)" "$wall" "$(echo "$mb / $wall" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
{ echo "name: t2s"; echo "input: {path: $work/hant.jsonl, id: id}"; echo "stages:"; echo "  - chinese_convert: {mode: t2s}"; } > "$work/t2s.yaml"
for cores in 1 2; do
  out="$work/out-t2s-$cores"
  pin=""; [ "$cores" = 1 ] && pin="taskset -c 0"
  /usr/bin/time -f "%e %M" -o "$work/time" $pin "$bin" --partitions "$cores" run "$work/t2s.yaml" --output "$out" > /dev/null
  read -r wall kb < "$work/time"
  fn=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print([s for s in r['stages'] if s['name']=='chinese_convert'][0]['seconds'])" "$out/report.json")
  printf '%-44s %8.2f %10.1f %10.0f\n' "openseek run, $cores core(s) (jsonl in, parquet out)" "$wall" "$(echo "$mb / $wall" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
  printf '%-44s %8.2f %10.1f\n' "  of which in chinese_convert (CPU s)" "$fn" "$(echo "$mb / $fn" | bc -l)"
done
