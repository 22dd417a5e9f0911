"""Workbench latency: upload → predictions + every branch CAM (start-up: benchmarks/startup.py).

    python benchmarks/workbench_latency.py [--repeats 20]

1. In-process, per bundled model: read + prepare + one-pass CAMs for every branch + overlays
   (what the Diagnose page computes), the same with a what-if degradation, and the old way
   (one pytorch-grad-cam call per branch) for comparison.
2. Through the API of a launched app (gradio_client): /predict then /cam with an upload,
   i.e. the round trip the browser makes.

The budget: ≤ 1 s for each on 2 CPU cores at 128 px.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from startup import free_port, wait_http  # benchmarks/startup.py, beside this file

import mkcnet.workbench  # noqa: F401  (offline environment)
from mkcnet.analysis.cam import HeadLogits, cam_class, cam_targets
from mkcnet.project import project_home
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.imaging import ImageCache, load_for
from mkcnet.workbench.reading import analyse, read_out

REPO = project_home()
ASSETS = REPO / "assets"
EXAMPLES = {"fundus": ASSETS / "examples" / "synth_PDR_reject.png", "ct": ASSETS / "examples" / "phantom_ct.dcm"}


def interleaved(variants: dict, repeats: int) -> dict[str, tuple[float, float, float]]:
    """(first call, median, min) in ms per variant, the variants taking turns in each round so
    that a burst of load from another process hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats + 1):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: (t[0], statistics.median(t[1:]), min(t[1:])) for name, t in times.items()}


def per_branch_library_calls(model, prepared) -> None:
    """The straightforward way: one pytorch-grad-cam call (forward + full backward) per branch."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reading = read_out(model, prepared)
    top = {"diagnosis": reading.top_diagnosis, "quality": reading.top_quality, "auxiliary": reading.top_auxiliary}
    for target in cam_targets(model.task_net):
        with cam_class("Grad-CAM")(model=HeadLogits(model.task_net, target.head), target_layers=[target.layer]) as c:
            c(input_tensor=prepared.tensor, targets=[ClassifierOutputTarget(top[target.head])])


def in_process(context: Workbench, repeats: int) -> None:
    print(f"## In process (torch threads: {torch.get_num_threads()}; median / min of {repeats}, interleaved)\n")
    print("| model | input | first call ms | upload → predictions + all CAMs ms | with what-if ms "
          "| per-branch library calls ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name in context.zoo.names():
        model = context.zoo.model(name)
        example = EXAMPLES.get(model.entry.modality, EXAMPLES["fundus"])
        images = ImageCache()
        family = {"fundus": "fundus.blur", "ct": "ct.streak"}.get(model.entry.modality)
        prepared = load_for(model, str(example), images)
        result = interleaved({
            "upload": lambda: analyse(model, load_for(model, str(example), images), "Grad-CAM", 0.5),
            "what-if": lambda: analyse(model, load_for(model, str(example), images, family, 3, 0), "Grad-CAM", 0.5),
            "library": lambda: per_branch_library_calls(model, prepared),
        }, repeats)
        cell = lambda key: f"{result[key][1]:.0f} / {result[key][2]:.0f}"  # noqa: E731
        print(f"| {name} | {example.name} @ {model.config.image_size} px | {result['upload'][0]:.0f} | "
              f"{cell('upload')} | {cell('what-if')} | {cell('library')} |")
    print()


def through_the_app(repeats: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url, time.perf_counter() + 120)
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        context = Workbench()
        print("## Through the API (gradio_client: upload, /predict, then /cam)\n")
        print("| model | first ms | median / min ms |")
        print("|---|---:|---:|")
        for name in context.zoo.names():
            example = EXAMPLES.get(context.zoo.entry(name).modality, EXAMPLES["fundus"])

            def round_trip() -> None:
                file = handle_file(str(example))
                client.predict(file, name, "none", 0, 0, api_name="/predict")
                client.predict(file, name, "none", 0, 0, "Grad-CAM", 0.5, api_name="/cam")

            first, median, fastest = interleaved({"api": round_trip}, repeats)["api"]
            print(f"| {name} | {first:.0f} | {median:.0f} / {fastest:.0f} |")
        print()
    finally:
        app.terminate()
        app.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    print(f"# Workbench latency ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f})\n")
    in_process(Workbench(), args.repeats)
    through_the_app(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
