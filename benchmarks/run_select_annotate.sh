#!/usr/bin/env bash
# Annotate the selection benchmark's pools in resumable units, each under the shared heavy lock.
#   benchmarks/run_select_annotate.sh OUT_ROOT POOL [POOL ...]
# e.g. nohup benchmarks/run_select_annotate.sh "$CURATE_CACHE/annotations" \
#        "$CURATE_DATA"/instruct/alpaca_44k.json "$CURATE_DATA"/instruct/dolly_15k.json > annotate.log 2>&1 &
# ($CURATE_DATA: your copy of the public datasets, see docs/data.md.)
# Progress: OUT_ROOT/<pool>/progress.log. Rerunning skips finished shards.
set -euo pipefail
PY=${PYTHON:-python}
LOCK=${HEAVY_LOCK:-${TMPDIR:-/tmp}/curate-heavy.lock}
root=$1; shift
for pool in "$@"; do
  out="$root/$(basename "${pool%.*}")"
  mkdir -p "$out"
  n=$($PY benchmarks/select_annotate.py "$pool" "$out" --n-shards 2>/dev/null | tail -1)
  for ((i = 0; i < n; i++)); do
    [ -e "$out/$(printf 'shard_%03d.npz' "$i")" ] && continue
    flock "$LOCK" $PY benchmarks/select_annotate.py "$pool" "$out" --shard "$i"
  done
  [ -e "$out/annotations.npz" ] || flock "$LOCK" $PY benchmarks/select_annotate.py "$pool" "$out" --merge
  [ -e "$out/template_check.json" ] || flock "$LOCK" $PY benchmarks/select_annotate.py "$pool" "$out" --check-template --n 512
done
echo "all pools annotated"
