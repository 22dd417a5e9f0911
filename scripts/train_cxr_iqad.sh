#!/usr/bin/env bash
# Build the CXR-IQAD-like set from the real pediatric X-rays (if missing), train with the cpu
# preset and evaluate on its validation split. Needs ../shared/data/cxr-kermany (present on
# the project's machines, absent on users'). EPOCHS overrides the preset's epoch count.
set -euo pipefail
SRC=${SRC:-../shared/data/cxr-kermany}
DATA=${DATA:-data/cxr-iqad}
OUT=${OUT:-runs/cxr-iqad}
if [ ! -f "$DATA/train.csv" ]; then
  if [ ! -f "$SRC/labels.csv" ]; then
    echo "pediatric X-rays not found at $SRC (set SRC=...): this script needs the real data set." >&2
    exit 1
  fi
  mkcnet make-iqad "$SRC/labels.csv" "$DATA" --modality xray --seed 0
fi
for method in ${METHODS:-vanilla mkcnet}; do
  # make-iqad numbers quality worst first (2 = good); the preset's map is for the official split files.
  mkcnet train --dataset cxr-iqad --quality-map none --root "$DATA" --method "$method" --preset cpu ${EPOCHS:+--epochs "$EPOCHS"} \
    --out "$OUT/$method" --overwrite --quiet
  mkcnet evaluate "$OUT/$method" "$DATA/val.csv" --quiet
done
