"""In-process latency and throughput of one bundled model on torch and on onnxruntime.

    python benchmarks/runtime_latency.py [MODEL] [--threads 1] [--repeats 15]

Exports MODEL (default ct-iqad-mkcnet) to a temporary .onnx, then times, on the same uint8
images, the network alone (normalise + forward: torch under no_grad, onnxruntime's CPU
provider) at batch 1 and batch 32, and `predict` end to end (decode, resize, network, guard) for
one image. Prints medians; docs/workbench.md quotes them ("Runtimes").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mkcnet
from mkcnet.data.dataset import normalise
from mkcnet.export import export_onnx
from mkcnet.inference.onnx_runtime import OnnxModel
from mkcnet.project import project_path


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="ct-iqad-mkcnet")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = mkcnet.load(args.model)
    c = model.config
    with tempfile.TemporaryDirectory() as tmp:
        runtime = OnnxModel(export_onnx(model.loaded, Path(tmp) / "model.onnx"), threads=args.threads)
        rng = np.random.default_rng(0)
        image = next(p for p in sorted(project_path("assets", "examples").iterdir())
                     if p.suffix in (".png", ".dcm", ".jpg"))
        print(f"{args.model}: {c.backbone} at {c.image_size} px, {c.in_chans} channel(s); {args.threads} thread(s); "
              f"median of {args.repeats}")
        print(f"{'':28} {'torch':>10} {'onnxruntime':>12} {'ratio':>7}")
        for batch in (1, 32):
            x = rng.integers(0, 256, (batch, c.input.channels, c.input.size, c.input.size), dtype=np.uint8)

            def on_torch(x=x):
                with torch.no_grad():
                    model.loaded.task_net(normalise(torch.from_numpy(x), c.input))

            t, o = median_seconds(on_torch, args.repeats), median_seconds(lambda x=x: runtime.run(x), args.repeats)
            if batch == 1:
                print(f"{'network, batch 1 (ms)':28} {t * 1e3:10.1f} {o * 1e3:12.1f} {o / t:7.2f}")
            else:
                print(f"{'network, batch 32 (images/s)':28} {batch / t:10.0f} {batch / o:12.0f} {t / o:7.2f}")
        t = median_seconds(lambda: model.predict([image]), args.repeats)
        o = median_seconds(lambda: runtime.predict([image]), args.repeats)
        print(f"{'predict one file (ms)':28} {t * 1e3:10.1f} {o * 1e3:12.1f} {o / t:7.2f}   ({image.name})")


if __name__ == "__main__":
    main()
