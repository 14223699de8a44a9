#!/usr/bin/env python3
"""Megatron's own code reads our shards, and writes the same bytes.

    megatron_check.py SHARD_DIR RUN_DIR TOKENIZER_JSON EOS

For every prefix of SHARD_DIR (those with a sidecar PREFIX.json):
  1. megatron.core.datasets.indexed_dataset.IndexedDataset opens it and reads every sequence; per group
     (dataset), the multiset of sequences must equal Python `tokenizers`' ids of the texts of openseek's
     run output RUN_DIR/data (plus EOS): Megatron gets exactly the tokenizer's ids;
  2. the sequences Megatron read are written again with megatron.core's IndexedDatasetBuilder (same
     dtype, one document each, in order); its .bin and .idx must be byte-identical to ours.
Exits 1 on any difference. Needs torch and megatron-core (scripts/setup-torch-venv).
"""
import glob
import json
import os
import sys
import tempfile

import numpy
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

sys.path.insert(0, os.path.dirname(__file__))
from py_tokenize import load_tokenizer, texts_of  # noqa: E402

shard_dir, run_dir, tokenizer_json, eos = sys.argv[1:5]
tok = load_tokenizer(tokenizer_json)
eos_id = tok.token_to_id(eos)
by_group = {}
for table in texts_of(os.path.join(run_dir, "data"), columns=("text", "dataset")):
    for text, ds in zip(table.column("text").to_pylist(), table.column("dataset").to_pylist()):
        by_group.setdefault(ds, []).append(text)

ok = True
read_by_group = {}
with tempfile.TemporaryDirectory() as tmp:
    for side_path in sorted(glob.glob(os.path.join(shard_dir, "*.json"))):
        prefix = side_path[: -len(".json")]
        side = json.load(open(side_path))
        ds = IndexedDataset(prefix, mmap=True)
        seqs = [ds[i] for i in range(len(ds))]
        read_by_group.setdefault(side["group"], []).extend(s.tolist() for s in seqs)
        # Megatron's builder, fed what Megatron read.
        out = os.path.join(tmp, os.path.basename(prefix))
        builder = IndexedDatasetBuilder(out + ".bin", dtype=ds.index.dtype)
        for s in seqs:
            builder.add_item(torch.from_numpy(numpy.array(s)))
            builder.end_document()
        builder.finalize(out + ".idx")
        same = all(open(out + e, "rb").read() == open(prefix + e, "rb").read() for e in (".bin", ".idx"))
        ok &= same
        print(f"{os.path.basename(prefix)}: Megatron read {len(ds)} sequences ({ds.index.dtype.__name__}); "
              f"IndexedDatasetBuilder's .bin/.idx {'byte-identical' if same else 'DIFFER'}")
for group, texts in sorted(by_group.items()):
    expected = sorted(e.ids + [eos_id] for e in tok.encode_batch(texts, add_special_tokens=False))
    got = sorted(read_by_group.get(group, []))
    same = expected == got
    ok &= same
    print(f"{group}: {len(expected)} documents, {sum(map(len, expected))} tokens; Megatron's read "
          + ("equals Python tokenizers' ids" if same else "DIFFERS from Python tokenizers' ids"))
print("all checks passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
