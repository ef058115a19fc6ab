#!/usr/bin/env bash
# Runs benchmarks/select_targeted.py step by step. Each argument is a group of steps joined by
# commas, run under one acquisition of the shared lock ($HEAVY_LOCK, default /work/heavy.lock;
# keep a group under ~15 min). Resumable: a step whose result file exists is skipped, and
# embedding shards resume inside a step.
# Step results go to runs/bench/select_targeted/select_targeted/; a first argument --record writes
# them to the committed benchmarks/results/select_targeted/ instead.
# Usage: bash benchmarks/select_targeted.sh [--record] [DATA_DIR [GROUP ...]]
# DATA_DIR: the public datasets folder, default $CURATE_DATA (docs/data.md).
#   e.g. bash benchmarks/select_targeted.sh "$CURATE_DATA" zipfit,cost,sub_zipfit rds_minilm,sub_minilm small small sae
set -u
OUT=runs/bench/select_targeted/select_targeted
if [ "${1:-}" = "--record" ]; then OUT=benchmarks/results/select_targeted; shift; fi
DATA=${1:-$(python -c 'import sys; sys.path.insert(0, "benchmarks"); import results_io; print(results_io.data_dir())')}; shift || true
GROUPS_=${*:-"zipfit,cost,sub_zipfit rds_minilm,sub_minilm small small sae"}
LOCK=${HEAVY_LOCK:-/work/heavy.lock}
mkdir -p "$OUT"
for g in $GROUPS_; do
  echo "$(date -u +%T) waiting for the lock: $g"
  flock "$LOCK" bash -c '
    for s in ${1//,/ }; do
      if [ -f "$3/$s.json" ]; then echo "skip $s (done)"; continue; fi
      echo "$(date -u +%T) start $s"
      timeout 900 python benchmarks/select_targeted.py --step "$s" --data "$2" --out "$3" > "$3/$s.log" 2>&1
      echo "$(date -u +%T) end $s rc=$?"
    done' _ "$g" "$DATA" "$OUT"
done
python benchmarks/select_targeted.py --step summary --out "$OUT"
