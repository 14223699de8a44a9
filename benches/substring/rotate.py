"""Copy k of a JSONL corpus for the 5x run of benches/substring/run.sh: ASCII letters rotated by k places
and CJK ideographs (U+4E00..U+9FFF) by k code points, ids suffixed with #k. Each copy keeps the repeats of
the original exactly (the map is a bijection of characters) and shares almost none with the others.

    python3 rotate.py K < in.jsonl > out.jsonl
"""
import json
import sys

k = int(sys.argv[1])
table = {}
for base in (ord("a"), ord("A")):
    for i in range(26):
        table[base + i] = base + (i + k) % 26
lo, n = 0x4E00, 0x9FFF - 0x4E00 + 1
for i in range(n):
    table[lo + i] = lo + (i + k) % n

out = sys.stdout
for line in sys.stdin:
    row = json.loads(line)
    row["text"] = row["text"].translate(table)
    row["id"] = f"{row['id']}#{k}"
    out.write(json.dumps(row, ensure_ascii=False))
    out.write("\n")
