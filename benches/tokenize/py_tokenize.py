#!/usr/bin/env python3
"""Python `tokenizers` beside openseek's tokenize stage, on the same documents.

    py_tokenize.py limit TOKENIZER_JSON INPUT_DIR [--batch N]
        Encodes every `text` of INPUT_DIR/*.parquet with `Tokenizer.encode_batch` (add_special_tokens=False),
        batches of N documents, on RAYON_NUM_THREADS threads; prints JSON with documents, tokens (+1 per
        document for the end-of-text token our template adds), encode seconds and tokens/s. Reading the
        Parquet files is not timed: this is the speed of the shared Rust core, the limit for our stage.

    py_tokenize.py parity TOKENIZER_JSON RUN_DIR SHARD_DIR EOS
        For every dataset of openseek's run output RUN_DIR/data/*.parquet (text, dataset), encodes each
        text with Python `tokenizers` plus the EOS token and compares the multiset of sequences with the
        shard prefixes of that dataset in SHARD_DIR (read with numpy from .bin/.idx). Exits 1 on any
        difference.
"""
import glob
import json
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer


def load_tokenizer(path):
    """A tokenizer.json, or the gzipped one the repository bundles (data/tokenizers/qwen3), set to encode
    document text as openseek does: special tokens' strings inside a document are text."""
    if path.endswith(".gz"):
        import gzip
        tok = Tokenizer.from_str(gzip.decompress(open(path, "rb").read()).decode("utf-8"))
    else:
        tok = Tokenizer.from_file(path)
    tok.encode_special_tokens = True
    return tok


def texts_of(dir_or_glob, columns=("text",)):
    files = sorted(glob.glob(os.path.join(dir_or_glob, "*.parquet")))
    return [pq.read_table(f, columns=list(columns)) for f in files]


def read_prefix(prefix):
    """(dtype, list of sequences) of a Megatron MMIDIDX v1 prefix, per DESIGN.md section 6."""
    idx = open(prefix + ".idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00", prefix
    code = idx[17]
    dtype = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}[code]
    s = int.from_bytes(idx[18:26], "little")
    lengths = np.frombuffer(idx, dtype=np.int32, count=s, offset=34)
    pointers = np.frombuffer(idx, dtype=np.int64, count=s, offset=34 + 4 * s)
    data = np.fromfile(prefix + ".bin", dtype=dtype)
    size = np.dtype(dtype).itemsize
    return [data[p // size : p // size + n].tolist() for p, n in zip(pointers, lengths)]


def limit(tokenizer_json, input_dir, batch):
    tok = load_tokenizer(tokenizer_json)
    texts = [t for table in texts_of(input_dir) for t in table.column("text").to_pylist()]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), batch):
        for enc in tok.encode_batch(texts[i : i + batch], add_special_tokens=False):
            tokens += len(enc.ids) + 1
    secs = time.perf_counter() - start
    print(json.dumps({"documents": len(texts), "bytes": nbytes, "tokens": tokens,
                      "seconds": round(secs, 3), "tokens_per_s": round(tokens / secs),
                      "threads": os.environ.get("RAYON_NUM_THREADS", "all")}))


def parity(tokenizer_json, run_dir, shard_dir, eos):
    tok = load_tokenizer(tokenizer_json)
    eos_id = tok.token_to_id(eos)
    assert eos_id is not None, f"{eos} is not a token of {tokenizer_json}"
    by_group = {}
    for table in texts_of(os.path.join(run_dir, "data"), columns=("text", "dataset")):
        for text, ds in zip(table.column("text").to_pylist(), table.column("dataset").to_pylist()):
            by_group.setdefault(ds, []).append(text)
    ok = True
    total = 0
    for group, texts in sorted(by_group.items()):
        expected = sorted(e.ids + [eos_id] for e in tok.encode_batch(texts, add_special_tokens=False))
        written = []
        for json_path in sorted(glob.glob(os.path.join(shard_dir, "*.json"))):
            side = json.load(open(json_path))
            if side.get("group") == group:
                written.extend(read_prefix(json_path[: -len(".json")]))
        written.sort()
        same = expected == written
        ok &= same
        total += len(expected)
        ntok = sum(len(x) for x in expected)
        print(f"{group}: {len(expected)} documents, {ntok} tokens: "
              + ("identical to Python tokenizers" if same else f"DIFFERENT ({len(written)} sequences written)"))
    print(f"{total} documents compared: {'all identical' if ok else 'differences found'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "limit":
        batch = int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 1024
        limit(sys.argv[2], sys.argv[3], batch)
    elif mode == "parity":
        parity(*sys.argv[2:6])
    else:
        sys.exit(__doc__)
