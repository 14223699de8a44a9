#!/usr/bin/env bash
# qa_simple, cot_backward and quality_annotate over 50 documents of the shared corpus (25 English,
# 25 Chinese), against a real llama-server (../shared/llm/serve.sh: Gemma 3 270M base, 4 slots of
# 1,024 tokens of context, on this machine's CPU). Prints each stage's summary: documents in, out and
# rejected (by reason), requests, tokens, requests per second.
#   [FORMAT=text|json_schema] benches/synth/run.sh [WORK_DIR]
# Needs: the server on $ENDPOINT (default http://127.0.0.1:8088/v1), an `openseek` binary ($OPENSEEK,
# default target/release/openseek), the corpus ($OPENSEEK_CORPUS, default ../shared/corpus).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/openseek-synth-bench}
OPENSEEK=${OPENSEEK:-target/release/openseek}
CORPUS=$(realpath "${OPENSEEK_CORPUS:-../shared/corpus}")
ENDPOINT=${ENDPOINT:-http://127.0.0.1:8088/v1}
# text: the prompt asks for JSON; json_schema: the server's constrained decoding enforces each stage's schema.
FORMAT=${FORMAT:-json_schema}
curl -sf "${ENDPOINT%/v1}/v1/models" >/dev/null || { echo "no server at $ENDPOINT (../shared/llm/serve.sh 8088 &)"; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"

# 25 documents of each language, of moderate length, the same on every run (ordered by id).
for lang in en zh; do
  cat > "$WORK/sample-$lang.yaml" <<YAML
name: sample-$lang
input: {path: $CORPUS/$lang, id: id, name: corpus-$lang}
output: {path: $WORK/sample-$lang, format: jsonl}
stages:
  - sql: "SELECT id, text, dataset, '$lang' AS language FROM input WHERE char_length(text) BETWEEN 600 AND 4000 ORDER BY id LIMIT 25"
YAML
  "$OPENSEEK" run "$WORK/sample-$lang.yaml" > /dev/null
done

# The local server has 1,024 tokens of context per slot: Chinese takes about twice the tokens per
# character, so it gets half the characters (two stages routed by language).
endpoint="endpoint: $ENDPOINT, model: gemma-3-270m, temperature: 0, max_concurrency: 4, timeout_s: 600, parse_retries: 0, response_format: $FORMAT"
for stage in quality_annotate qa_simple cot_backward; do
  case $stage in
    quality_annotate) tokens=128 ;;
    *) tokens=256 ;;
  esac
  cat > "$WORK/$stage.yaml" <<YAML
name: bench-$stage
input: {path: "$WORK/sample-*/data/*.jsonl", id: id}
output: {path: $WORK/out-$stage, format: jsonl}
keep_rejected_text: false
stages:
  - $stage: {$endpoint, max_tokens: $tokens, max_input_chars: 1200, where: "language = 'en'"}
  - $stage: {$endpoint, max_tokens: $tokens, max_input_chars: 450, where: "language = 'zh'"}
YAML
  start=$(date +%s.%N)
  "$OPENSEEK" run "$WORK/$stage.yaml"
  end=$(date +%s.%N)
  echo "$stage: $(echo "$end - $start" | bc) s wall"
done
python3 - "$WORK" <<'PY'
import json, sys, glob
work = sys.argv[1]
for path in sorted(glob.glob(f"{work}/out-*/report.json")):
    r = json.load(open(path))
    for s in r["stages"]:
        y = s.get("synthesis")
        if not y:
            continue
        print(json.dumps({"stage": s["name"], "pipeline": r["pipeline"], "rows_in": s["rows_in"],
                          "rows_out": s["rows_out"], "rows_added": s.get("rows_added", 0),
                          "rejected": s["rows_rejected"], "reasons": s["rejects_by_reason"],
                          "requests": y["requests"], "prompt_tokens": y["prompt_tokens"],
                          "completion_tokens": y["completion_tokens"], "seconds": round(y["seconds"], 1),
                          "requests_per_second": round(y["requests_per_second"], 3)}))
PY
