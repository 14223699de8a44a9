#!/usr/bin/env python3
"""datatrove 0.10.1's MegatronDocumentTokenizer over INPUT_DIR/*.parquet, the peer of our tokenize stage.

    datatrove_tokenize.py INPUT_DIR OUTPUT_DIR TOKENIZER_JSON --workers N

One task per input file, N workers (LocalPipelineExecutor), EOS <|endoftext|> after each document.
Prints JSON with wall seconds and the tokens written (from the .idx files it wrote).
"""
import argparse
import glob
import json
import os
import time

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("tokenizer")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.input, "*.parquet")))
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[
            ParquetReader(a.input, text_key="text", id_key="id", glob_pattern="*.parquet"),
            MegatronDocumentTokenizer(output_folder=a.output, tokenizer_name_or_path=a.tokenizer,
                                      eos_token="<|endoftext|>", batch_size=1000),
        ],
        tasks=len(files),
        workers=a.workers,
        logging_dir=os.path.join(a.output, "logs"),
    ).run()
    secs = time.perf_counter() - start
    tokens = 0
    for idx in glob.glob(os.path.join(a.output, "**", "*.idx"), recursive=True):
        raw = open(idx, "rb").read()
        size = 4 if raw[17] == 4 else 2
        tokens += os.path.getsize(idx[: -len(".idx")] + ".bin") // size
    print(json.dumps({"seconds": round(secs, 2), "tokens": tokens, "tokens_per_s": round(tokens / secs)}))


# datatrove's workers come from a forkserver, which imports this file again.
if __name__ == "__main__":
    main()
