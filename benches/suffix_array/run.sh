#!/usr/bin/env bash
# Suffix array candidates on all of ../shared/corpus (en + zh text, documents 0-separated):
# seconds and peak RSS of each, one process each, on 1 and 2 threads where the crate has threads.
#   benches/suffix_array/run.sh [CORPUS]
set -euo pipefail
cd "$(dirname "$0")"
CORPUS=$(realpath "${1:-${OPENSEEK_CORPUS:-../../../shared/corpus}}")
cargo build --release --quiet
BIN=target/release/suffix-array-compare
for spec in "libsais 1" "libsais 2" "cdivsufsort 1" "divsufsort 1" "suffix 1"; do
  set -- $spec
  /usr/bin/time -f "peak_rss_kb %M" "$BIN" "$1" "$CORPUS" "$2" 2>&1 | tr "\n" " "
  echo
done
