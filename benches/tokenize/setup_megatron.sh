#!/usr/bin/env bash
# A virtualenv with megatron-core and torch (PyPI's wheel, CPU is enough) plus tokenizers and pyarrow,
# for benches/tokenize/megatron_check.py. Idempotent; the versions installed go to $VENV/freeze.txt.
#   benches/tokenize/setup_megatron.sh     (env: OPENSEEK_MEGATRON_VENV, default ~/.cache/openseek/megatron-venv,
#   outside the clone so that it outlives it: 5.6 GB, 3 minutes to install here)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${OPENSEEK_MEGATRON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/openseek/megatron-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import megatron.core, torch, tokenizers, pyarrow" 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet torch megatron-core tokenizers==0.23.* pyarrow numpy
fi
"$VENV/bin/python" -m pip freeze > "$VENV/freeze.txt"
grep -iE "^(torch|megatron-core|tokenizers|numpy)==" "$VENV/freeze.txt"
