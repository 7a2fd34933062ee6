#!/bin/bash
# The matched-reconstruction grid of docs/results/README.md: the main grid and the same_batch arm, staged so
# that every run reaches a step count before any run goes past it. Rerunning it resumes every run from its checkpoint.
set -u
cd "$(dirname "$0")/../.."
PY=".venv/bin/python"
export PYTHONPATH=$HOME/factorvae-runs/src
COMMON="--seeds 3 --eval-every 2500 --metrics factorvae,mig,tc --protocol paper --workers 2 --threads 1 --set checkpoint_every=2500"
for STEPS in ${STAGES:-5000 15000 30000}; do
  echo "== $(date -u +%FT%TZ) main grid to $STEPS"
  $PY -m factorvae sweep --model betavae,factorvae --beta 1,2,4,8,16 --gamma 10,20,40 --steps $STEPS $COMMON \
      --out ~/factorvae-runs/paper-cpu
  echo "== $(date -u +%FT%TZ) same_batch arm to $STEPS"
  $PY -m factorvae sweep --model factorvae --gamma 40 --steps $STEPS $COMMON --set same_batch=true \
      --out ~/factorvae-runs/paper-cpu-samebatch
done
echo "== $(date -u +%FT%TZ) done"
