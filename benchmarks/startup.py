"""Start-up times: `mkcnet --help`, `python app.py --help`, and `python app.py` until the first
page is usable in a browser: the Diagnose page showing its first example's predictions and
reading, then every branch map (those come from the page's load event). Each a fresh process;
the median (and min-max) of several runs.

    python benchmarks/startup.py [--runs 5] [--app-runs 3] [--no-browser]

The browser is Debian's chromium (/usr/bin/chromium) driven by Playwright; it is started
before the app, so its own start-up is not counted. Targets: ≤ 1.5 s for each --help and
≤ 6 s to a usable first page, on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mkcnet.workbench.hosting import free_port

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def wait_http(url: str, deadline: float) -> None:
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


MAPS_SHOWN = ("() => { const maps = [...document.querySelectorAll('.cams img')];"
              " return maps.length >= 2 && maps.every(i => i.complete && i.naturalWidth > 0); }")


def app_to_usable(browser) -> dict[str, float]:
    """Seconds from the app's process start until the server answers, until the home page shows
    its first example's predictions and reading, and until it shows every branch map."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    page = browser.new_page() if browser is not None else None
    start = time.perf_counter()
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url, start + 180)
        times = {"server answering": time.perf_counter() - start}
        if page is not None:
            page.set_default_timeout(180_000)
            page.goto(url)
            page.get_by_text("Image quality").first.wait_for()
            times["predictions and reading shown"] = time.perf_counter() - start
            page.wait_for_function(MAPS_SHOWN)
            times["every branch map shown"] = time.perf_counter() - start
            page.close()
        return times
    finally:
        app.terminate()
        app.wait(timeout=30)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs of each --help")
    p.add_argument("--app-runs", type=int, default=3, help="launches of the app")
    p.add_argument("--no-browser", action="store_true", help="time the server only")
    args = p.parse_args()
    mkcnet = shutil.which("mkcnet", path=str(Path(sys.executable).parent)) or "mkcnet"
    print(f"# Start-up ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}, "
          f"Python {sys.version.split()[0]})\n")
    timed([mkcnet, "--help"])  # warm the file cache once
    helps = {"mkcnet --help": [timed([mkcnet, "--help"]) for _ in range(args.runs)],
             "python app.py --help": [timed([sys.executable, "app.py", "--help"]) for _ in range(args.runs)]}
    for name, values in helps.items():
        print(f"- `{name}`: {summary(values)}")
    browser, playwright = None, None
    if not args.no_browser and CHROMIUM.is_file():
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    try:
        runs = [app_to_usable(browser) for _ in range(args.app_runs)]
    finally:
        if browser is not None:
            browser.close()
            playwright.stop()
    for name in runs[0]:
        print(f"- `python app.py` → {name}{' in chromium' if name != 'server answering' else ''}: "
              f"{summary([r[name] for r in runs])}")
    if browser is None:
        print("- the first page in a browser: not measured (no /usr/bin/chromium, or --no-browser)")
    print(f"\nload average afterwards: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
