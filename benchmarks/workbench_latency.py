"""Workbench latency: upload → predictions + every branch CAM, and launch → first page usable.

    python benchmarks/workbench_latency.py [--repeats 20] [--no-startup]

1. In-process, per bundled model: read + prepare + one-pass CAMs for every branch + overlays
   (what the Diagnose page computes), the same with a what-if degradation, and the old way
   (one pytorch-grad-cam call per branch) for comparison.
2. Through the API of a launched app (gradio_client): /predict then /cam with an upload,
   i.e. the round trip the browser makes.
3. Startup: `python app.py` in a fresh process until the server answers, and (with Debian's
   chromium) until the Diagnose page shows predictions and CAMs in a browser.

The budget (issue): ≤ 1 s for (1)/(2) on 2 CPU cores at 128 px; ≤ 10 s for (3).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mkcnet.workbench  # noqa: F401  (offline environment)

import torch

from mkcnet.workbench.cam import HeadLogits, cam_class, cam_targets
from mkcnet.workbench.context import ASSETS, Workbench
from mkcnet.workbench.imaging import ImageCache, load_for
from mkcnet.workbench.inference import analyse, read_out

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"fundus": ASSETS / "examples" / "synth_PDR_reject.png", "ct": ASSETS / "examples" / "phantom_ct.dcm"}


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call, median of the next `repeats`) in milliseconds."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(times)


def per_branch_library_calls(model, prepared) -> None:
    """The straightforward way: one pytorch-grad-cam call (forward + full backward) per branch."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reading = read_out(model, prepared)
    top = {"diagnosis": reading.top_diagnosis, "quality": reading.top_quality, "auxiliary": reading.top_auxiliary}
    for target in cam_targets(model.task_net):
        with cam_class("Grad-CAM")(model=HeadLogits(model.task_net, target.head), target_layers=[target.layer]) as c:
            c(input_tensor=prepared.tensor, targets=[ClassifierOutputTarget(top[target.head])])


def in_process(context: Workbench, repeats: int) -> None:
    print(f"## In process (torch threads: {torch.get_num_threads()})\n")
    print("| model | input | first call ms | median ms | with what-if ms | per-branch library calls ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name in context.zoo.names():
        model = context.zoo.model(name)
        example = EXAMPLES.get(model.entry.modality, EXAMPLES["fundus"])
        images = ImageCache()
        family = {"fundus": "fundus.blur", "ct": "ct.streak"}.get(model.entry.modality)

        def upload() -> None:
            analyse(model, load_for(model, str(example), images), "Grad-CAM", 0.5)

        def what_if() -> None:
            analyse(model, load_for(model, str(example), images, family, 3, 0), "Grad-CAM", 0.5)

        first, median = timed(upload, repeats)
        _, degraded = timed(what_if, repeats)
        prepared = load_for(model, str(example), images)
        _, library = timed(lambda: per_branch_library_calls(model, prepared), max(3, repeats // 4))
        size = model.config.image_size
        print(f"| {name} | {example.name} @ {size} px | {first:.0f} | {median:.0f} | {degraded:.0f} | {library:.0f} |")
    print()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def through_the_app(repeats: int, startup: bool) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    app = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url)
        served = time.perf_counter() - start
        usable = browser_first_page(url, start) if startup else None
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        context = Workbench()
        print("## Through the API (gradio_client: upload, /predict, then /cam)\n")
        print("| model | first ms | median ms |")
        print("|---|---:|---:|")
        for name in context.zoo.names():
            example = EXAMPLES.get(context.zoo.entry(name).modality, EXAMPLES["fundus"])

            def round_trip() -> None:
                file = handle_file(str(example))
                client.predict(file, name, "none", 0, 0, api_name="/predict")
                client.predict(file, name, "none", 0, 0, "Grad-CAM", 0.5, api_name="/cam")

            first, median = timed(round_trip, repeats)
            print(f"| {name} | {first:.0f} | {median:.0f} |")
        print()
        if startup:
            print("## Startup (`python app.py` in a fresh process)\n")
            print(f"- server answering: {served:.1f} s")
            print("- Diagnose page showing predictions and CAMs in chromium: "
                  + (f"{usable:.1f} s" if usable is not None else "not measured (no /usr/bin/chromium)"))
    finally:
        app.terminate()
        app.wait(timeout=30)


def browser_first_page(url: str, start: float) -> float | None:
    if not Path("/usr/bin/chromium").is_file():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_function("document.querySelectorAll('.cams img').length >= 2")
        usable = time.perf_counter() - start
        browser.close()
    return usable


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-startup", action="store_true", help="skip the fresh-process startup measurement")
    args = p.parse_args()
    print(f"# Workbench latency ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f})\n")
    in_process(Workbench(), args.repeats)
    through_the_app(args.repeats, not args.no_startup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
