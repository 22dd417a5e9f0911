#!/usr/bin/env bash
# The GPU check: one run of at most 8 minutes on one H100/H200, prepared on the CPU machine.
#
#   python scripts/pack_for_gpu.py ../shared/data/ct-iqad data/gpu-ct-iqad     # here, once (~20 MiB)
#   (on the GPU machine, with data/gpu-ct-iqad and .venv carried along)
#   bash scripts/gpu_check.sh [MINUTES_FOR_TRAINING]                            # default 4
#
# 1. the test suite with CUDA visible (training tests pick the device "auto" → cuda);
# 2. the Stage II meta gradient under bf16 autocast vs fp32, on CUDA (cosines);
# 3. `--preset paper` (VGG16-BN, 256 px, the paper's batch) on CT-IQAD for as many epochs as
#    fit in the minutes given, evaluated on val.
# Results go to $OUT (the GPU tool fetches it) or runs/gpu-check.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
MINUTES=${1:-4}
DATA=${DATA:-data/gpu-ct-iqad}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
[ -f .venv/bin/activate ] && . .venv/bin/activate
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== 1. tests on CUDA"
timeout 150 python -m pytest -q -x -p no:cacheprovider -m "not browser" 2>&1 | tail -15 | tee "$OUT/tests.txt"

echo "== 2. bf16 vs fp32 meta gradient on CUDA"
timeout 60 python - <<'PY' 2>&1 | tee "$OUT/meta_bf16.txt"
import torch
from mkcnet.data.dataset import Batch
from mkcnet.methods import apply_method
from mkcnet.models import build_networks
from mkcnet.presets import build_run_config
from mkcnet.training.meta_step import meta_gradients
torch.manual_seed(0)
config = apply_method(build_run_config("ct-iqad", "paper", "mkcnet", image_size=128))
task_net, meta = (m.cuda().train() for m in build_networks(config.model))
b = Batch(torch.randn(8, 1, 128, 128, device="cuda"), torch.randint(0, 2, (8,), device="cuda"),
          torch.randint(0, 2, (8,), device="cuda"), torch.arange(8))
for second_order in (True, False):
    ref, _ = meta_gradients(task_net, meta, b, 0.01, 5e-4, 0.1, 2.0, second_order)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low, _ = meta_gradients(task_net, meta, b, 0.01, 5e-4, 0.1, 2.0, second_order)
    a, c = torch.cat([g.flatten().float() for g in ref]), torch.cat([g.flatten().float() for g in low])
    print(f"{'second' if second_order else 'first'} order: cosine(bf16 autocast, fp32) = {float(a @ c / (a.norm() * c.norm())):.4f}")
PY

echo "== 3. paper preset on CT-IQAD for ${MINUTES} min"
if [ ! -f "$DATA/train.csv" ]; then
  echo "no $DATA: run scripts/pack_for_gpu.py first (see the top of this file)" | tee "$OUT/paper.txt"
  exit 0
fi
start=$(date +%s)
timeout $((MINUTES * 60)) mkcnet train --dataset ct-iqad --root "$DATA" --method mkcnet --preset paper \
  --out "$OUT/paper-ct" --quiet 2>&1 | tee "$OUT/paper.txt"
echo "trained for $(( $(date +%s) - start )) s" | tee -a "$OUT/paper.txt"
# Evaluate the best finished epoch (the run is cut by the timeout, not finished).
if [ -f "$OUT/paper-ct/best.safetensors" ]; then
  timeout 90 mkcnet evaluate "$OUT/paper-ct" "$DATA/val.csv" --out "$OUT/paper-ct/eval-val" 2>&1 | tee -a "$OUT/paper.txt"
  cp "$OUT/paper-ct/history.csv" "$OUT/" 2>/dev/null
  rm -f "$OUT"/paper-ct/*.safetensors  # weights of a partial run need not come back
fi
