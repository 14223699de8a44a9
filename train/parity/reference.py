"""The PyTorch side of openseek-train's comparisons with Hugging Face `transformers`
(`DeepseekV3ForCausalLM`), run from the venv of scripts/setup-torch-venv.

  reference.py make DIR [--tie] [--no-q-lora] [--yarn]
      builds a tiny random DeepseekV3ForCausalLM (routing biases random, so the selection bias matters),
      saves it to DIR with save_pretrained, and writes DIR/reference.safetensors: `ids` (int64, batch × seq)
      and `logits` (f32) of the model on them.
  reference.py check DIR
      loads DIR (a checkpoint of ours) with from_pretrained, computes the logits of the `ids` of
      DIR/reference.safetensors and compares them with its `logits` (ours); and, when it holds
      `prompt` and `generated`, continues the prompt greedily with `generate` and compares the new ids
      with ours. Prints one JSON line; exits 1 when the relative error ‖a − b‖ / ‖b‖ is 1e-4 or more
      or the ids differ.
  reference.py speed DIR --data PREFIX --seq-len S --micro-batch B --steps N [--threads T]
      trains the model of DIR (our checkpoint, loaded by transformers) with torch's AdamW as our trainer
      configures it (β 0.9/0.95, ε 1e-8, weight decay 0.1 but none on norms, clipping at 1.0) on windows
      of the shard PREFIX, eager mode, and prints the tokens per second of each step as JSON lines.
"""
import argparse
import json
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

LIMIT = 1e-4


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make(args):
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if args.yarn:
        rope = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                "original_max_position_embeddings": 32, "beta_fast": 32.0, "beta_slow": 1.0,
                "mscale": 1.0, "mscale_all_dim": 1.0}
    cfg = DeepseekV3Config(
        vocab_size=211, hidden_size=48, intermediate_size=96, moe_intermediate_size=24,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
        n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2, first_k_dense_replace=1,
        routed_scaling_factor=2.5, q_lora_rank=None if args.no_q_lora else 24, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=12, v_head_dim=10, max_position_embeddings=128,
        rope_parameters=rope, tie_word_embeddings=args.tie, initializer_range=0.1,
        num_nextn_predict_layers=0,
    )
    torch.manual_seed(args.seed)
    model = DeepseekV3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.rand_like(buf) * 0.1)
    model.save_pretrained(args.dir)
    ids = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    save_file({"ids": ids, "logits": logits.contiguous()}, f"{args.dir}/reference.safetensors")


def check(args):
    ref = load_file(f"{args.dir}/reference.safetensors")
    model = DeepseekV3ForCausalLM.from_pretrained(args.dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=ref["ids"].long()).logits.float()
    err = relative_error(logits, ref["logits"])
    diff = (logits - ref["logits"]).abs().max().item()
    report = {"relative_error": err, "max_abs_diff": diff, "limit": LIMIT}
    ok = err < LIMIT
    if "generated" in ref:
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        prompt = ref["prompt"].long().unsqueeze(0)
        n = ref["generated"].numel()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        theirs = out[0, prompt.shape[1]:].tolist()
        report["greedy_ids_equal"] = theirs == ref["generated"].long().tolist()
        ok = ok and report["greedy_ids_equal"]
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


def speed(args):
    torch.set_num_threads(args.threads)
    model = DeepseekV3ForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    tokens = np.memmap(args.data + ".bin", dtype=np.int32 if args.dtype == "i32" else np.uint16, mode="r")
    rng = np.random.default_rng(0)
    s, b = args.seq_len, args.micro_batch
    vocab = model.config.vocab_size
    for step in range(args.steps):
        starts = rng.integers(0, len(tokens) - s - 1, size=b)
        x = torch.from_numpy(np.stack([tokens[i:i + s + 1] for i in starts]).astype(np.int64))
        began = time.perf_counter()
        logits = model(input_ids=x[:, :s]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - began
        print(json.dumps({"step": step + 1, "loss": loss.item(), "tokens_per_s": b * s / elapsed}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--tie", action="store_true")
    m.add_argument("--no-q-lora", action="store_true")
    m.add_argument("--yarn", action="store_true")
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("dir")
    sp = sub.add_parser("speed")
    sp.add_argument("dir")
    sp.add_argument("--data", required=True)
    sp.add_argument("--dtype", default="i32", choices=["i32", "u16"])
    sp.add_argument("--seq-len", type=int, required=True)
    sp.add_argument("--micro-batch", type=int, required=True)
    sp.add_argument("--steps", type=int, default=20)
    sp.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    {"make": make, "check": check, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
