#!/usr/bin/env bash
# The experiment suite behind docs/RESULTS.md: every method (baselines, MKCNet, ablations) on
# CT-IQAD (real, ../shared/data/ct-iqad, reported on its validation split) and on the synthetic
# fundus set (made here if missing, reported on its test split), 3 seeds, then the LQ-ratio
# curves, the embeddings and the gradient cosines.
#
#   scripts/run_suite.sh                          # the cpu preset (24 epochs, 128 px)
#   EPOCHS=6 IMAGE_SIZE=64 scripts/run_suite.sh   # the budget RESULTS.md reports
#   PRESET=paper scripts/run_suite.sh             # VGG16-BN, 256 px, paper epochs (GPU)
#
# Resumable: finished runs are skipped, interrupted ones resume. The two data sets train side by
# side, one torch thread each (faster on 2 cores than one process with two threads).
set -euo pipefail
CT=${CT:-../shared/data/ct-iqad}
SYNTH=${SYNTH:-data/synth-fundus}
OUT=${OUT:-runs/suite}
PRESET=${PRESET:-cpu}
SEEDS=${SEEDS:-0 1 2}
TABLE2="vanilla mixup multitask canet detach maxl mkcnet mkcnet-fo"
ABLATIONS="mkcnet-no-gab mkcnet-no-mab mkcnet-no-meta mkcnet-mask-diagnosis mkcnet-mask-quality mkcnet-mask-none"
METHODS=${METHODS:-$TABLE2 $ABLATIONS}

if [ ! -f "$CT/train.csv" ]; then
  echo "CT-IQAD not found at $CT (set CT=...): the suite needs the real data set." >&2
  exit 1
fi
if [ ! -f "$SYNTH/train.csv" ]; then
  mkcnet synth "$SYNTH" --n 2000 --size 256 --seed 0
fi
[ "$PRESET" = cpu ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
budget=(--preset "$PRESET" ${EPOCHS:+--epochs "$EPOCHS"} ${IMAGE_SIZE:+--image-size "$IMAGE_SIZE"} --out "$OUT")

# Seed-major, so that a stopped suite has every method for its first seeds.
train() {  # DATASET ROOT SPLIT
  for seed in $SEEDS; do
    mkcnet bench --data "$1=$2" --split "$3" --seeds "$seed" --methods $METHODS "${budget[@]}"
  done
}
train ct-iqad "$CT" val > "$OUT.ct-iqad.log" 2>&1 &
ct=$!
train synth-fundus "$SYNTH" test > "$OUT.synth-fundus.log" 2>&1 || { wait $ct; exit 1; }
wait $ct

# Both data sets in one table with their average (every run is finished: this only reads them).
mkcnet bench --data "ct-iqad=$CT" --data "synth-fundus=$SYNTH" --split ct-iqad=val --split synth-fundus=test \
  --seeds $SEEDS --methods $METHODS "${budget[@]}" > "$OUT.table.log"

for pair in "ct-iqad val" "synth-fundus test"; do
  set -- $pair
  packs() { for m in "$@"; do ls -d "$OUT/runs/$dataset/$m"/seed*/eval-"$split"; done; }
  dataset=$1 split=$2
  mkcnet ood $(packs $TABLE2) --by method --out "$OUT/ood-$dataset"
  mkcnet ood $(packs mkcnet $ABLATIONS) --by method --out "$OUT/ood-$dataset-ablations"
  for m in vanilla multitask mkcnet; do
    mkcnet embed "$OUT/runs/$dataset/$m/seed0" --method tsne --color joint --out "$OUT/embed-$dataset-$m"
  done
  mkcnet embed "$OUT/runs/$dataset/mkcnet/seed0" --method umap --color joint --out "$OUT/embed-$dataset-mkcnet-umap"
  mkcnet grads "$OUT/runs/$dataset"/{multitask,canet,detach,maxl,mkcnet,mkcnet-fo}/seed* --by method \
    --out "$OUT/grads-$dataset"
done
