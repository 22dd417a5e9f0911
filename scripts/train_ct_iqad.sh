#!/usr/bin/env bash
# Train vanilla, multitask and MKCNet with the cpu preset on the real CT-IQAD split, then
# evaluate each best checkpoint on the validation split (results packs in runs/ct-iqad/*/eval-val).
# Needs ../shared/data/ct-iqad (present on the project's machines, absent on users').
# EPOCHS overrides the preset's epoch count (the README says which was used for its table).
set -euo pipefail
DATA=${DATA:-../shared/data/ct-iqad}
OUT=${OUT:-runs/ct-iqad}
if [ ! -f "$DATA/train.csv" ]; then
  echo "CT-IQAD not found at $DATA (set DATA=...): this script needs the real data set." >&2
  exit 1
fi
for method in ${METHODS:-vanilla multitask mkcnet}; do
  mkcnet train --dataset ct-iqad --root "$DATA" --method "$method" --preset cpu ${EPOCHS:+--epochs "$EPOCHS"} \
    --out "$OUT/$method" --overwrite --quiet
  mkcnet evaluate "$OUT/$method" "$DATA/val.csv" --quiet
done
