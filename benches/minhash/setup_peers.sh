#!/usr/bin/env bash
# Create the Python virtualenv with the two MinHash-LSH peers used by benches/minhash/run.sh:
#   * datatrove[io,processing]==0.10.1 (+ spacy, orjson)
#   * text-dedup==0.4.0
#
# text-dedup 0.4.0 declares heavy dependencies that `python -m text_dedup.minhash` never imports
# (pyspark: only text_dedup.minhash_spark; unisim: only ann_unisim; pybloom-live, bitarray:
# bloom filter / suffix array; sphinxcontrib-bibtex: docs) and pins urllib3<=2.0, which would
# fight datatrove's huggingface-hub>=1.6. So it is installed with --no-deps, and only the modules
# that text_dedup/minhash.py and text_dedup/utils/* import are added by hand.
#
# Idempotent: if the venv already has the pinned versions, nothing is installed.
# Versions actually installed are written to $VENV/bench-freeze.txt.
#
# Usage: benches/minhash/setup_peers.sh     (env: OPENSEEK_BENCH_VENV, PYTHON)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${OPENSEEK_BENCH_VENV:-$REPO/target/bench-venv}"
PYTHON="${PYTHON:-python3}"
DATATROVE_VERSION=0.10.1
TEXTDEDUP_VERSION=0.4.0
NICE="nice -n 19"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=($NICE "$PY" -m pip --disable-pip-version-check)

installed_version() {  # prints the installed version of a distribution, or nothing
    "$PY" - "$1" <<'PYEOF' 2>/dev/null || true
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PYEOF
}

have_all() {
    [ "$(installed_version datatrove)" = "$DATATROVE_VERSION" ] || return 1
    [ "$(installed_version text-dedup)" = "$TEXTDEDUP_VERSION" ] || return 1
    "$PY" -c 'import datatrove.pipeline.dedup, datatrove.pipeline.readers, spacy, orjson, pyarrow, xxhash' \
        >/dev/null 2>&1 || return 1
    "$PY" -c 'import text_dedup.minhash' >/dev/null 2>&1 || return 1
}

if have_all; then
    echo "peers already installed in $VENV (datatrove $DATATROVE_VERSION, text-dedup $TEXTDEDUP_VERSION)"
else
    "${PIP[@]}" install --upgrade pip wheel
    "${PIP[@]}" install "datatrove[io,processing]==$DATATROVE_VERSION" spacy orjson
    "${PIP[@]}" install --no-deps "text-dedup==$TEXTDEDUP_VERSION"
    # what text_dedup.minhash + text_dedup.utils import (see their METADATA for the original pins)
    "${PIP[@]}" install "click>=8.1.7,<9" "click-option-group>=0.5.6,<0.6" "rich>=13.7.1,<14" \
        "scipy>=1.10.1" "ftfy>=6.1.1" "regex>=2023.5.5" "xxhash>=3.0.0" "datasets>=2.17.0" \
        "numpy>=1.26.4" tqdm
    have_all || { echo "error: peers still not importable after install" >&2; exit 1; }
fi

"$PY" -m pip --disable-pip-version-check freeze > "$VENV/bench-freeze.txt"
echo "installed versions written to $VENV/bench-freeze.txt:"
grep -iE '^(datatrove|text-dedup|text_dedup|datasets|pyarrow|numpy|spacy|xxhash|orjson|huggingface[-_]hub)==' \
    "$VENV/bench-freeze.txt" | sed 's/^/  /'
