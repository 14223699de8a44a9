#!/usr/bin/env python3
"""Write K copies of every parquet file of a directory, with ids made unique.

    make_copies.py IN_DIR OUT_DIR K

Copy k of IN_DIR/name.parquet is OUT_DIR/name-kK.parquet; its ids are `<id>#k` for k >= 1 and the
original id for k = 0. Only the `id` and `text` columns are kept (the peers need nothing else), in the
input's row-group layout, zstd-compressed. Re-running with the same arguments is a no-op.
"""
import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input_dir", type=Path)
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("k", type=int)
    ap.add_argument("--id-column", default="id")
    ap.add_argument("--text-column", default="text")
    args = ap.parse_args()
    if args.k < 1:
        ap.error("K must be at least 1")

    files = sorted(args.input_dir.glob("*.parquet"))
    if not files:
        print(f"no *.parquet in {args.input_dir}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    written = skipped = rows = 0
    for f in files:
        pf = pq.ParquetFile(f)
        rg_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else None
        table = pf.read(columns=[args.id_column, args.text_column])
        ids = table.column(args.id_column).cast(pa.string())
        for k in range(args.k):
            out = args.output_dir / f"{f.stem}-k{k}.parquet"
            rows += table.num_rows
            if out.exists() and pq.ParquetFile(out).metadata.num_rows == table.num_rows:
                skipped += 1
                continue
            new_ids = ids if k == 0 else pc.binary_join_element_wise(ids, pa.scalar(f"#{k}"), "")
            t = pa.table({"id": new_ids, "text": table.column(args.text_column)})
            tmp = out.with_suffix(".parquet.tmp")
            pq.write_table(t, tmp, compression="zstd", row_group_size=rg_rows)
            tmp.rename(out)
            written += 1
    print(f"{args.output_dir}: {len(files)} files x {args.k} = {rows} rows ({written} written, {skipped} already there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
