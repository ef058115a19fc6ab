#!/usr/bin/env bash
# Every unit of benchmarks/select_methods.py (one pool x method each) under the shared heavy lock,
# then car at CaR's published size and the report. Finished units are skipped on a rerun. The
# report goes to runs/bench/select_methods/; an extra --record writes benchmarks/results/ instead.
#   benchmarks/run_select_methods.sh ANNOTATIONS_ROOT [extra select_methods.py args, e.g. --record]
set -euo pipefail
PY=${PYTHON:-python}
LOCK=${HEAVY_LOCK:-${TMPDIR:-/tmp}/curate-heavy.lock}
ann=$1; shift
B="$PY benchmarks/select_methods.py --annotations $ann $*"
work="$ann/select_methods"
for pool in alpaca_44k dolly_15k; do
  [ -e "$work/units/${pool}__random.json" ] || flock "$LOCK" $B --prepare "$pool"
  [ -e "$ann/$pool/sae_latents.npy" ] || flock "$LOCK" $B --prepare-sae "$pool" || echo "sae features for $pool failed"
done
for u in $($B --list); do
  [ -e "$work/units/${u/:/__}.json" ] && continue
  flock "$LOCK" timeout 900 $B --unit "$u" || echo "unit $u failed (rc $?)"
done
[ -e "$work/units/alpaca_44k__car_published.npz" ] || flock "$LOCK" $B --car-published || echo "car_published failed"
flock "$LOCK" $B --report > /dev/null
case " $* " in *" --record "*) report=benchmarks/results ;; *) report=runs/bench/select_methods ;; esac
echo "report: $report/select_methods.md"
