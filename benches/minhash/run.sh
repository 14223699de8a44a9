#!/usr/bin/env bash
# MinHash-LSH near-duplicate removal, openseek against datatrove 0.10.1 and text-dedup 0.4.0, on the same
# English corpus repeated FACTOR times (ids of copy k get the suffix `#k`, so copies are exact duplicates
# of each other with distinct ids).
#
#   benches/minhash/run.sh [FACTOR...]          (default: 1 5)
#
# Same settings everywhere: word 5-grams, 14 bands x 8 rows (112 hashes), 2 processes or threads (JOBS).
#   openseek    target/release/openseek --partitions JOBS run <dedup-en.yaml for this factor> --fresh
#   datatrove   benches/minhash/datatrove_minhash.py: the 4 stages, LocalPipelineExecutor, JOBS workers
#   text-dedup  benches/minhash/textdedup_minhash.sh: python -m text_dedup.minhash, --num_proc JOBS
# Each tool runs under /usr/bin/time -v (wall clock; "Maximum resident set size", which is the largest
# single process) inside benches/minhash/measure.py, which also samples the summed PSS of the whole
# process tree (datatrove's workers come from a forkserver that GNU time never sees).
# The removed sets are compared by benches/minhash/compare.py, with datatrove as the reference.
#
# Needs the peers' venv: benches/minhash/setup_peers.sh (OPENSEEK_BENCH_VENV overrides its place) and a
# release build (cargo build --release); openseek is skipped with a message if its run fails (e.g. a
# binary without the minhash_dedup stage).
# Environment: OPENSEEK_CORPUS (default ../shared/corpus; its en/ is read), TOOLS (default
# "openseek datatrove text-dedup"), JOBS (default 2), BENCH_NICE (a prefix such as "nice -n 19"),
# KEEP_WORK=1 keeps text-dedup's HF cache, BENCH_DIR (default target/minhash-bench) moves the output.
# Output: target/minhash-bench/ (copies xK/, per-run logs, removed-id files, time and memory files) and
# the table, printed and saved as target/minhash-bench/results-<date>.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"
CORPUS="$(realpath "${OPENSEEK_CORPUS:-$REPO/../shared/corpus}")/en"
VENV="${OPENSEEK_BENCH_VENV:-$REPO/target/bench-venv}"
PY="$VENV/bin/python"
BENCH="$(realpath -m "${BENCH_DIR:-$REPO/target/minhash-bench}")"
BIN="$REPO/target/release/openseek"
TOOLS="${TOOLS:-openseek datatrove text-dedup}"
JOBS="${JOBS:-2}"
NICE=(${BENCH_NICE:-})
if [ $# -gt 0 ]; then FACTORS=("$@"); else FACTORS=(1 5); fi

[ -d "$CORPUS" ] || { echo "no corpus at $CORPUS (set OPENSEEK_CORPUS)" >&2; exit 1; }
[ -x "$PY" ] || { echo "no venv at $VENV: run benches/minhash/setup_peers.sh first" >&2; exit 1; }
mkdir -p "$BENCH"
stamp="$(date -u +%F-%H%M)"
results="$BENCH/results-$stamp.md"
rows=()
details=""

seconds() { # GNU time's "h:mm:ss" or "m:ss.ss" -> seconds
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }' <<<"$1"
}
time_field() { # file field-prefix
    grep -F "$2" "$1" | head -1 | sed 's/.*: //'
}
json_field() { # file key [default]
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print(sys.argv[3] if v is None else (f"{v:.4f}" if isinstance(v, float) else v))' "$1" "$2" "${3:--}" 2>/dev/null || echo "${3:--}"
}

# run TOOL FACTOR CMD...: measured run; leaves $BENCH/{log,time,mem}-TOOL-xFACTOR.*; returns the exit status
measured() {
    local tool=$1 k=$2; shift 2
    local tag="$tool-x$k"
    echo "  $tool: $*" >&2
    set +e
    "$PY" "$HERE/measure.py" --out "$BENCH/mem-$tag.json" -- \
        /usr/bin/time -v -o "$BENCH/time-$tag.txt" "${NICE[@]}" "$@" >"$BENCH/log-$tag.txt" 2>&1
    local rc=$?
    set -e
    return $rc
}

for k in "${FACTORS[@]}"; do
    echo "== factor $k" >&2
    if [ "$k" = 1 ]; then
        input="$CORPUS"
    else
        input="$BENCH/x$k"
        "$PY" "$HERE/make_copies.py" "$CORPUS" "$input" "$k" >&2
    fi
    docs=$("$PY" -c 'import glob,sys,pyarrow.parquet as pq; print(sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(sys.argv[1]+"/*.parquet")))' "$input")
    sets=()
    declare -A wall=() rss=() pss=() status=()

    for tool in $TOOLS; do
        tag="$tool-x$k"
        case "$tool" in
        openseek)
            if [ ! -x "$BIN" ]; then
                echo "  openseek: skipped, no $BIN (cargo build --release)" >&2
                status[$tool]="skipped: no release binary"; continue
            fi
            yaml="$BENCH/dedup-en-x$k.yaml"
            sed "s|PLACEHOLDER|$input|" "$HERE/dedup-en.yaml" >"$yaml"
            out="$BENCH/out-openseek-x$k"
            if measured "$tool" "$k" "$BIN" --partitions "$JOBS" run "$yaml" --output "$out" --fresh; then
                sets+=("openseek=$out")
            else
                rc=$?
                echo "  openseek: skipped, exit $rc (minhash_dedup not supported by this build?); last lines of $BENCH/log-$tag.txt:" >&2
                tail -n 3 "$BENCH/log-$tag.txt" | sed 's/^/    /' >&2
                status[$tool]="skipped: exit $rc"; continue
            fi
            ;;
        datatrove)
            removed="$BENCH/removed-datatrove-x$k.txt"
            if measured "$tool" "$k" "$PY" "$HERE/datatrove_minhash.py" "$input" "$BENCH/work-datatrove-x$k" \
                --removed-ids "$removed" --workers "$JOBS"; then
                sets+=("datatrove=$removed")
            else
                echo "  datatrove failed (exit $?), see $BENCH/log-$tag.txt" >&2
                status[$tool]="failed"; continue
            fi
            ;;
        text-dedup)
            removed="$BENCH/removed-text-dedup-x$k.txt"
            work="$BENCH/work-text-dedup-x$k"
            if measured "$tool" "$k" env STEP=run NUM_PROC="$JOBS" OPENSEEK_BENCH_VENV="$VENV" \
                bash "$HERE/textdedup_minhash.sh" "$input" "$work" "$removed"; then
                STEP=ids OPENSEEK_BENCH_VENV="$VENV" bash "$HERE/textdedup_minhash.sh" "$input" "$work" "$removed" \
                    2>>"$BENCH/log-$tag.txt"
                [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$work/hf-cache"
                sets+=("text-dedup=$removed")
            else
                echo "  text-dedup failed (exit $?), see $BENCH/log-$tag.txt" >&2
                status[$tool]="failed"; continue
            fi
            ;;
        *)
            echo "unknown tool $tool" >&2; exit 2 ;;
        esac
        wall[$tool]=$(seconds "$(time_field "$BENCH/time-$tag.txt" "Elapsed (wall clock)")")
        rss[$tool]=$(( $(time_field "$BENCH/time-$tag.txt" "Maximum resident set size") / 1024 ))
        pss[$tool]=$(json_field "$BENCH/mem-$tag.json" peak_tree_pss_mb | xargs printf '%.0f')
        echo "  $tool: ${wall[$tool]} s, max RSS ${rss[$tool]} MB, tree PSS ${pss[$tool]} MB" >&2
    done

    cmp_json="$BENCH/compare-x$k.json"
    rm -f "$cmp_json"
    if [ ${#sets[@]} -gt 0 ]; then
        cmp_out=$("$PY" "$HERE/compare.py" "${sets[@]}" --ref datatrove --json "$cmp_json")
        details+=$'\n'"### factor $k ($docs documents)"$'\n\n'"$cmp_out"$'\n'
    fi
    for tool in $TOOLS; do
        if [ -n "${status[$tool]:-}" ]; then
            rows+=("| $tool | $k | $docs | ${status[$tool]} | | | | | |")
            continue
        fi
        rows+=("| $tool | $k | $docs | ${wall[$tool]} | ${rss[$tool]} | ${pss[$tool]} | $(json_field "$cmp_json" "$tool.removed") | $(json_field "$cmp_json" "$tool.jaccard_vs_ref") | $(json_field "$cmp_json" "$tool.pair_jaccard_vs_ref") |")
    done
    unset wall rss pss status
done

{
    echo "# MinHash-LSH near-duplicate removal: openseek vs datatrove vs text-dedup"
    echo
    echo "$(date -u '+%F %H:%M UTC'); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); JOBS=$JOBS"
    echo "corpus: $CORPUS x factor (copies with ids suffixed #k); word 5-grams, 14 bands x 8 rows"
    echo "openseek: $( [ -x "$BIN" ] && git -C "$REPO" describe --always --dirty 2>/dev/null || echo '-')"
    echo "peers: $(grep -iE '^(datatrove|text-dedup|datasets|spacy|numpy)==' "$VENV/bench-freeze.txt" 2>/dev/null | xargs)"
    echo
    echo "wall s and max RSS from /usr/bin/time -v (max RSS: the largest single process it waited for);"
    echo "tree PSS: peak of the summed PSS of the whole process tree, sampled every 0.1 s. Jaccard: of the removed"
    echo "ids vs datatrove's (which member of a cluster a tool keeps matters here); pair Jaccard: of the sets of"
    echo "document pairs put in one cluster, vs datatrove's (independent of the member kept)."
    echo
    echo "| tool | factor | docs | wall s | max RSS MB | tree PSS MB | removed | Jaccard vs datatrove | pair Jaccard |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "## removed sets"
    echo "$details"
} >"$results"
cat "$results"
echo "saved to $results" >&2
