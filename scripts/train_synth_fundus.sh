#!/usr/bin/env bash
# Generate the synthetic fundus set (if missing) and train the workbench's bundled fundus
# models (vanilla and MKCNet, cpu preset), then evaluate them on its validation split.
# Needs no outside data. EPOCHS overrides the preset's epoch count.
set -euo pipefail
DATA=${DATA:-data/synth-fundus}
OUT=${OUT:-runs/synth-fundus}
[ -f "$DATA/train.csv" ] || mkcnet synth "$DATA" --n 2000 --size 256 --seed 0
for method in ${METHODS:-vanilla mkcnet}; do
  mkcnet train --dataset synth-fundus --root "$DATA" --method "$method" --preset cpu ${EPOCHS:+--epochs "$EPOCHS"} \
    --out "$OUT/$method" --overwrite --quiet
  mkcnet evaluate "$OUT/$method" "$DATA/val.csv" --quiet
done
