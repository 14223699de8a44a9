#!/usr/bin/env bash
# openseek-train on real shards (issue 7's measurements):
#  1. tokenizes ../shared/corpus (en and zh) with Qwen3's tokenizer into Megatron shards;
#  2. the unigram entropy of those tokens (what a model that ignores context scores at best);
#  3. speed, side by side: our step and a PyTorch eager step (transformers' DeepseekV3ForCausalLM, torch's
#     AdamW) of the same model without MTP on the same shapes, tokens/s (first, on a quiet machine);
#  4. trains train/configs/tiny.yaml on a 0.6/0.4 blend of them (run A, uninterrupted), then `eval`s
#     its last checkpoint on each language;
#  5. the same run killed (SIGKILL) once a step past its first checkpoint is logged, then started again
#     (run B): its metrics must equal A's, step by step.
#   benches/train/run.sh [WORKDIR]   (default /tmp/openseek-train-bench; needs scripts/setup-torch-venv)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-/tmp/openseek-train-bench}"
CORPUS="${OPENSEEK_CORPUS:-$REPO/../shared/corpus}"
PY="${OPENSEEK_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/openseek/torch-venv}/bin/python"
STEPS="${STEPS:-300}"
cd "$REPO"
# One package at a time: built together, their features unify into a third build of the dependencies.
cargo build --release --locked -p openseek
cargo build --release --locked -p openseek-train
BIN=target/release
mkdir -p "$WORK"
for l in en zh; do
    [ -f "$WORK/shards/$l/$l-00000.idx" ] || "$BIN/openseek" tokenize --input "$CORPUS/$l" --tokenizer qwen3 \
        --template "{text}<|endoftext|>" --output "$WORK/shards/$l" | tail -1
done
DATA="0.6,$WORK/shards/en/en-00000,0.4,$WORK/shards/zh/zh-00000"

"$PY" - "$WORK/shards/en/en-00000.bin" "$WORK/shards/zh/zh-00000.bin" <<'PYEOF'
import sys, numpy as np
mix = np.zeros(151936)
for w, path in zip((0.6, 0.4), sys.argv[1:]):
    t = np.fromfile(path, dtype=np.int32)
    p = np.bincount(t, minlength=151936).astype(np.float64) / len(t)
    mix += w * p
    q = p[p > 0]
    print(f"unigram entropy of {path}: {-(q * np.log(q)).sum():.3f} nats ({len(t)} tokens, {len(q)} distinct)")
q = mix[mix > 0]
print(f"unigram entropy of the 0.6/0.4 blend: {-(q * np.log(q)).sum():.3f} nats")
PYEOF

# Speed: the same model without MTP, causal attention only, as transformers runs it.
sed 's/num_nextn_predict_layers: 1/num_nextn_predict_layers: 0/; s/document_mask: true/document_mask: false/' \
    train/configs/tiny.yaml > "$WORK/tiny-no-mtp.yaml"
rm -rf "$WORK/speed"
"$BIN/openseek-train" train --config "$WORK/tiny-no-mtp.yaml" --data "$WORK/shards/en/en-00000" \
    --out "$WORK/speed" --steps 25 >/dev/null
"$PY" train/parity/reference.py speed "$WORK/speed/step-000025" --data "$WORK/shards/en/en-00000" \
    --seq-len "$(grep -oP '^  seq_len: \K\d+' train/configs/tiny.yaml)" \
    --micro-batch "$(grep -oP '^  micro_batch: \K\d+' train/configs/tiny.yaml)" --steps 25 2>/dev/null > "$WORK/speed/torch.jsonl"
"$PY" - "$WORK/speed/metrics.jsonl" "$WORK/speed/torch.jsonl" <<'PYEOF'
import json, sys
med = lambda p: sorted(json.loads(l)["tokens_per_s"] for l in list(open(p))[5:])[10]
ours, torch = med(sys.argv[1]), med(sys.argv[2])
print(f"tokens/s, median of steps 6-25: openseek-train {ours:.0f}, PyTorch eager {torch:.0f}: {ours / torch:.2f}x")
PYEOF

rm -rf "$WORK/A" "$WORK/B"
/usr/bin/time -f "run A: %e s, peak RSS %M KB" "$BIN/openseek-train" train --config train/configs/tiny.yaml \
    --data "$DATA" --out "$WORK/A" --steps "$STEPS"
for l in en zh; do
    echo "eval of step $STEPS on $l: $("$BIN/openseek-train" eval --checkpoint "$WORK/A/step-$(printf %06d "$STEPS")" \
        --data "$WORK/shards/$l/$l-00000" --max-tokens 65536 2>/dev/null)"
done
"$BIN/openseek-train" train --config train/configs/tiny.yaml --data "$DATA" --out "$WORK/B" --steps "$STEPS" \
    >/dev/null 2>&1 &
pid=$!
kill_at=$((STEPS / 2 + 7))
until [ -f "$WORK/B/metrics.jsonl" ] && [ "$(wc -l < "$WORK/B/metrics.jsonl")" -ge "$kill_at" ]; do sleep 0.2; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "run B killed after $(wc -l < "$WORK/B/metrics.jsonl") logged steps; restarting"
"$BIN/openseek-train" train --config train/configs/tiny.yaml --data "$DATA" --out "$WORK/B" --steps "$STEPS" >/dev/null

"$PY" - "$WORK/A/metrics.jsonl" "$WORK/B/metrics.jsonl" <<'PYEOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
keys = ["step", "loss", "lm_loss", "mtp_loss", "balance_loss", "grad_norm", "lr", "expert_load_max_over_mean", "valid_loss"]
same = len(a) == len(b) and all(x.get(k) == y.get(k) for x, y in zip(a, b) for k in keys)
print(f"resumed run equals the uninterrupted one on {len(a)} steps: {same}")
for r in a:
    if "valid_loss" in r:
        print(f"step {r['step']:4d}: loss {r['loss']:.3f} lm {r['lm_loss']:.3f} mtp {r['mtp_loss']:.3f} valid {r['valid_loss']:.3f} "
              f"max/mean load {[round(x, 2) for x in r['expert_load_max_over_mean']]}")
def window(lo, hi):
    rows = [r["expert_load_max_over_mean"] for r in a if lo < r["step"] <= hi]
    return [round(sum(col) / len(col), 2) for col in zip(*rows)]
n = len(a)
print("mean max/mean expert load per MoE layer, by fifth of the run:",
      [window(n * i // 5, n * (i + 1) // 5) for i in range(5)])
tps = sorted(r["tokens_per_s"] for r in a[5:])
print(f"training tokens/s (median of steps 6..): {tps[len(tps) // 2]:.0f}")
sys.exit(0 if same else 1)
PYEOF

