"""Time the per-case robustness margin of the bundled models (one batched pass of every family of
the modality at severities 1-5): median, min and max over the bundled examples, 3 repeats each
after a warm-up, two torch threads. Run it on an idle machine; the target is ≤ 1 s per image.

    python benchmarks/robustness_margin.py
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from mkcnet.checkpoint import load_checkpoint
from mkcnet.data.images import model_window, read_image
from mkcnet.inference.robustness import robustness_margin
from mkcnet.project import project_path

MODELS = (("ct-iqad-mkcnet", "ct"), ("ct-iqad-vanilla", "ct"), ("synth-fundus-mkcnet", "fundus"),
          ("synth-fundus-vanilla", "fundus"))


def main(repeats: int = 3, per_model: int = 3) -> None:
    torch.set_num_threads(2)
    examples = json.loads(project_path("assets", "examples", "examples.json").read_text())
    for name, modality in MODELS:
        model = load_checkpoint(project_path("checkpoints", name))
        times = []
        for e in [e for e in examples if e["modality"] == modality][:per_model]:
            image = read_image(project_path("assets", "examples", e["file"]), window=model_window(model.config.model.input))
            robustness_margin(model, image, modality)  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                robustness_margin(model, image, modality)
                times.append(time.perf_counter() - start)
        print(f"{name:22s} median {statistics.median(times):.2f} s, min {min(times):.2f}, max {max(times):.2f} "
              f"over {len(times)} margins")


if __name__ == "__main__":
    main()
