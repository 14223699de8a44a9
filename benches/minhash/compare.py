#!/usr/bin/env python3
"""Compare the sets of documents that near-duplicate removal dropped, tool against tool.

    compare.py NAME=PATH [NAME=PATH ...] [--ref NAME] [--json FILE]

PATH is either a text file of removed ids, one per line (what datatrove_minhash.py and
textdedup_minhash.sh write), or an openseek run directory, whose near-duplicate removals are the rows of
RUN/rejects/**/*.parquet with reason == 'near_duplicate'. The reference (--ref, default `datatrove`, else
the first set) is compared with every other set: sizes, intersection, ids in only one, Jaccard; then a
matrix of pairwise intersections. --json writes {name: {"removed", "jaccard_vs_ref", ...}}.

Two tools that find exactly the same clusters still remove different documents when they keep different
members (each keeps the root of its own union-find), which lowers the Jaccard of the removed sets. So
where a removed-ids file has a sibling FILE.members (`id<TAB>cluster`: every member of every duplicate
cluster, kept or removed), or an openseek run's rejects name the kept document in `detail`,
keeper-independent figures are added: the share of each tool's removed ids that lie in one of the
reference's clusters; the Jaccard of the member sets; and the pair Jaccard, |P_a & P_b| / |P_a | P_b|,
where P is the set of document pairs that share a cluster (computed from contingency counts).
The member sets say little once the corpus is repeated (every copy is then in a cluster); the pairs do.
"""
import argparse
import glob
import json
import os
import sys


def load_openseek(run_dir: str) -> tuple[set[str], dict[str, str] | None]:
    """Removed ids, and id -> cluster, from an openseek run's rejects. The `detail` of a near_duplicate
    reject is the id of the document its cluster keeps (and `value` the cluster size), so the clusters are
    the removed ids plus the kept ids named in `detail`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(run_dir, "rejects", "**", "*.parquet"), recursive=True))
    ids: set[str] = set()
    members: dict[str, str] = {}
    for f in files:
        t = pq.read_table(f, columns=["id", "reason", "detail"])
        t = t.filter(pc.equal(t.column("reason"), "near_duplicate"))
        for i, kept in zip(t.column("id").to_pylist(), t.column("detail").to_pylist()):
            ids.add(i)
            if kept:
                members[i] = kept
                members[kept] = kept
    # only trust the clusters if every removed document names the one it was kept against
    return ids, (members if ids and all(i in members for i in ids) else None)


def load_removed(path: str) -> set[str]:
    with open(path) as fh:
        return {line.rstrip("\n") for line in fh if line.strip()}


def load_members(path: str) -> dict[str, str] | None:
    mpath = path + ".members"
    if not os.path.exists(mpath):
        return None
    members = {}
    with open(mpath) as fh:
        for line in fh:
            if line.strip():
                i, _, c = line.rstrip("\n").rpartition("\t")
                members[i] = c
    return members


def pairs(n: int) -> int:
    return n * (n - 1) // 2


def pair_jaccard(a: dict[str, str], b: dict[str, str]) -> float:
    """Jaccard of the sets of same-cluster document pairs of two clusterings (id -> cluster)."""
    from collections import Counter

    pa = sum(pairs(n) for n in Counter(a.values()).values())
    pb = sum(pairs(n) for n in Counter(b.values()).values())
    both = sum(pairs(n) for n in Counter((a[i], b[i]) for i in a.keys() & b.keys()).values())
    union = pa + pb - both
    return both / union if union else 1.0


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


def table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "| " + " | ".join(  # noqa: E731
        str(x).rjust(w[i]) if i >= right_from else str(x).ljust(w[i]) for i, x in enumerate(r)
    ) + " |"
    sep = "|" + "|".join("-" * (w[i] + 1) + (":" if i >= right_from else "-") for i in range(len(w))) + "|"
    return "\n".join([fmt(header), sep] + [fmt(r) for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", metavar="NAME=PATH")
    ap.add_argument("--ref", default=None, help="reference set (default: datatrove, else the first)")
    ap.add_argument("--json", default=None, help="write the figures per tool to this file")
    args = ap.parse_args()

    sets: dict[str, set[str]] = {}
    members: dict[str, dict[str, str] | None] = {}
    for spec in args.sets:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(spec.rstrip("/")), spec
        if not os.path.exists(path):
            print(f"{name}: {path} does not exist, skipped", file=sys.stderr)
            continue
        if os.path.isdir(path):
            sets[name], members[name] = load_openseek(path)
        else:
            sets[name], members[name] = load_removed(path), load_members(path)
    if not sets:
        print("nothing to compare", file=sys.stderr)
        return 1
    ref = args.ref if args.ref in sets else ("datatrove" if "datatrove" in sets else next(iter(sets)))
    r, rm = sets[ref], members[ref]

    out = {}
    rows = []
    for name, s in sets.items():
        m = members[name]
        fig = {"ref": ref, "removed": len(s), "jaccard_vs_ref": jaccard(s, r)}
        row = [name, len(s), len(s & r), len(s - r), len(r - s), f"{jaccard(s, r):.4f}"]
        if m is not None:
            fig["cluster_members"] = len(m)
            fig["clusters"] = len(set(m.values()))
        if rm is not None:
            in_ref = len(s & rm.keys()) / len(s) if s else 1.0
            fig["removed_in_ref_clusters"] = in_ref
            row.append(f"{in_ref:.4f}")
            if m is not None:
                fig["members_jaccard_vs_ref"] = jaccard(set(m), set(rm))
                fig["pair_jaccard_vs_ref"] = pair_jaccard(m, rm)
                row += [
                    f"{len(m)} / {len(set(m.values()))}",
                    f"{fig['members_jaccard_vs_ref']:.4f}",
                    f"{fig['pair_jaccard_vs_ref']:.4f}",
                ]
            else:
                row += ["-", "-", "-"]
        out[name] = fig
        rows.append(row)
    header = ["tool", "removed", f"also by {ref}", "only this", f"only {ref}", f"Jaccard vs {ref}"]
    if rm is not None:
        header += [
            f"removed in {ref}'s clusters",
            "members / clusters",
            f"members Jaccard vs {ref}",
            f"pair Jaccard vs {ref}",
        ]
    print(f"reference: {ref} ({len(r)} removed)\n")
    print(table(header, rows))

    if len(sets) > 1:
        names = list(sets)
        print("\npairwise intersections of the removed sets (diagonal: set size)\n")
        print(table([""] + names, [[a] + [len(sets[a] & sets[b]) for b in names] for a in names]))
        if len(names) > 2:
            print(
                f"\nremoved by all {len(names)}: {len(set.intersection(*sets.values()))}; "
                f"by any: {len(set.union(*sets.values()))}"
            )

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
