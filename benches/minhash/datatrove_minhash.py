#!/usr/bin/env python3
"""datatrove 0.10.1 MinHash-LSH near-duplicate removal over a directory of parquet files.

    datatrove_minhash.py INPUT_DIR WORK_DIR --removed-ids FILE [--workers 2] [--tasks N] [--no-write-kept]
                         [--no-members]

The four stages of datatrove's own example (examples/minhash_deduplication.py), run one after the other
with LocalPipelineExecutor:
  1. MinhashDedupSignature  (tasks = --tasks, default: number of input files)
  2. MinhashDedupBuckets    (tasks = num_buckets = 14)
  3. MinhashDedupCluster    (1 task)
  4. MinhashDedupFilter     (same reader and task count as stage 1), the removed documents go to an
     exclusion JsonlWriter that keeps only the id, and the kept documents to a ParquetWriter (zstd)
     unless --no-write-kept.
Config: 5-grams of spaCy-tokenised (spacy.blank("en")) simplified words, 14 bands x 8 rows, seed 1,
64-bit xxhash. WORK_DIR is wiped first. Writes the removed ids, one per line, sorted, to --removed-ids,
and prints the wall time of each stage and the total.

Unless --no-members, the cluster stage also saves cluster ids (save_cluster_id=True, read back by
load_cluster_ids=True), and FILE.members gets `id<TAB>cluster` for every document of a duplicate cluster,
kept or removed: compare.py uses it to compare clusterings independently of which member each tool keeps.
(A task whose documents are all cluster keepers has no .remove file, and datatrove then skips loading
its cluster ids: such keepers would be missing from FILE.members. With hundreds of removals per file
this does not happen on this corpus.)
"""
import argparse
import glob
import json
import os
import shutil
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
)
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.typeshelper import Languages


def id_and_cluster(self, document):  # JsonlWriter adapter: (writer, Document) -> dict
    return {"id": document.id, "cluster": document.metadata.get("minhash_cluster_id", -1)}


class RecordClusterMembers:
    """Pipeline function after MinhashDedupFilter: writes `id<TAB>cluster` of the kept documents that
    belong to a duplicate cluster to FOLDER/<rank>.tsv, and passes every document on."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(self.folder, f"{rank:05d}.tsv"), "w") as fh:
            for doc in data:
                c = doc.metadata.get("minhash_cluster_id", -1)
                if c != -1:
                    fh.write(f"{doc.id}\t{c}\n")
                yield doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input_dir")
    ap.add_argument("work_dir")
    ap.add_argument("--removed-ids", required=True, help="text file to write the removed ids to")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=0, help="tasks of stages 1 and 4 (default: number of files)")
    ap.add_argument("--no-write-kept", action="store_true", help="do not write the kept documents")
    ap.add_argument("--no-members", action="store_true", help="do not save cluster ids nor write FILE.members")
    args = ap.parse_args()

    input_dir = os.path.abspath(args.input_dir)
    work = os.path.abspath(args.work_dir)
    n_files = len(glob.glob(os.path.join(input_dir, "*.parquet")))
    if n_files == 0:
        print(f"no *.parquet in {input_dir}", file=sys.stderr)
        return 1
    tasks = args.tasks or n_files
    members = not args.no_members
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    config = MinhashConfig(
        n_grams=5,
        num_buckets=14,
        hashes_per_bucket=8,
        seed=1,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )

    def reader():
        # read_metadata=False: read only the text and id columns
        return ParquetReader(input_dir, glob_pattern="*.parquet", text_key="text", id_key="id", read_metadata=False)

    stage1 = LocalPipelineExecutor(
        pipeline=[
            reader(),
            MinhashDedupSignature(output_folder=f"{work}/signatures", config=config, language=Languages.english),
        ],
        tasks=tasks,
        workers=args.workers,
        logging_dir=f"{work}/logs/signatures",
    )
    stage2 = LocalPipelineExecutor(
        pipeline=[
            MinhashDedupBuckets(input_folder=f"{work}/signatures", output_folder=f"{work}/buckets", config=config),
        ],
        tasks=config.num_buckets,
        workers=args.workers,
        logging_dir=f"{work}/logs/buckets",
    )
    stage3 = LocalPipelineExecutor(
        pipeline=[
            MinhashDedupCluster(
                input_folder=f"{work}/buckets",
                output_folder=f"{work}/remove_ids",
                config=config,
                save_cluster_id=members,
            ),
        ],
        tasks=1,
        workers=1,
        logging_dir=f"{work}/logs/clusters",
    )
    filter_pipeline = [
        reader(),
        MinhashDedupFilter(
            input_folder=f"{work}/remove_ids",
            exclusion_writer=JsonlWriter(f"{work}/removed", compression=None, adapter=id_and_cluster),
            load_cluster_ids=members,
        ),
    ]
    if members:
        filter_pipeline.append(RecordClusterMembers(f"{work}/kept_members"))
    if not args.no_write_kept:
        filter_pipeline.append(ParquetWriter(f"{work}/output", compression="zstd"))
    stage4 = LocalPipelineExecutor(
        pipeline=filter_pipeline,
        tasks=tasks,
        workers=args.workers,
        logging_dir=f"{work}/logs/filter",
    )

    times = {}
    t_all = time.perf_counter()
    for name, ex in (("signatures", stage1), ("buckets", stage2), ("cluster", stage3), ("filter", stage4)):
        t = time.perf_counter()
        ex.run()
        times[name] = time.perf_counter() - t
    total = time.perf_counter() - t_all

    removed, member_rows = [], []
    for f in sorted(glob.glob(f"{work}/removed/*.jsonl")):
        with open(f) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    removed.append(r["id"])
                    member_rows.append(f"{r['id']}\t{r['cluster']}\n")
    removed.sort()
    with open(args.removed_ids, "w") as fh:
        fh.writelines(f"{i}\n" for i in removed)
    if members:
        for f in sorted(glob.glob(f"{work}/kept_members/*.tsv")):
            with open(f) as fh:
                member_rows.extend(fh)
        with open(args.removed_ids + ".members", "w") as fh:
            fh.writelines(sorted(member_rows))

    print(
        "datatrove stage times (s): " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()),
        file=sys.stderr,
    )
    print(f"datatrove: {len(removed)} documents removed, ids in {args.removed_ids}", file=sys.stderr)
    print(f"datatrove wall time: {total:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
