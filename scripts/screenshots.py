"""The workbench's pages as a visitor sees them, in both views, for docs/screenshots: every page
in the plain view (hosted, a clinician's default) and the expert view (local), and the case
report as chromium prints it (PDF → PNG with pdftoppm).

    python scripts/screenshots.py docs/screenshots

Needs Debian's chromium (/usr/bin/chromium), Playwright (the `dev` extra) and poppler-utils.
Uses the bundled models and examples only: no data set is read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HOME = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HOME))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EXAMPLE = HOME / "assets" / "examples" / "synth_PDR_reject.png"
PAGES = (("diagnose", "Diagnose"), ("embeddings", "Embeddings"), ("ood", "Out-of-distribution"), ("compare", "Compare"))


def serve(hosted: bool):
    """A running app (hosted or local) and its URL."""
    import mkcnet.workbench  # noqa: F401  (the offline environment, before gradio loads)
    from app import build_app, launch_options
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.hosting import free_port
    from mkcnet.workbench.zoo import ModelZoo

    if hosted:
        os.environ["SPACE_ID"] = "mkcnet/screenshots"
    else:
        os.environ.pop("SPACE_ID", None)
    context = Workbench(ModelZoo(), data_root="")
    demo = build_app(context)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(context))
    return context, demo, f"http://127.0.0.1:{port}/"


def settle(page) -> None:
    """Wait until the page's work is done: no spinner, every image loaded."""
    page.wait_for_timeout(1500)
    page.wait_for_function("!document.querySelector('.progress-text, .eta-bar')", timeout=120_000)
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=120_000)
    page.wait_for_timeout(1000)


def shoot(out: Path, view: str, url: str, report: bool) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator(".cams img").first.wait_for()
        for path, title in PAGES:
            if path != "diagnose":
                page.get_by_role("link", name=title).click()
            settle(page)
            page.screenshot(path=str(out / f"{path}-{view}.png"), full_page=True)
            print(f"wrote {out / f'{path}-{view}.png'}")
        if report:
            page.get_by_role("link", name="Diagnose").click()
            settle(page)
            page.locator(".upload button[aria-label=Clear]").click()
            page.locator(".upload input[type=file]").set_input_files(str(EXAMPLE))
            page.locator(f".upload [aria-label='{EXAMPLE.name}']").wait_for()
            settle(page)
            page.get_by_role("button", name="Case report (HTML)").click()
            link = page.locator(".report a[href*='report.html']").first
            link.wait_for()
            with tempfile.TemporaryDirectory() as tmp:
                html, pdf = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
                html.write_bytes(page.request.get(link.get_attribute("href")).body())
                subprocess.run([CHROMIUM, *ARGS, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri()],
                               check=True, capture_output=True, timeout=120)
                subprocess.run(["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "2", str(pdf), str(Path(tmp) / "page")],
                               check=True)
                side_by_side(sorted(Path(tmp).glob("page*.png")), out / f"case-report-printed-{view}.png")
            print(f"wrote {out / f'case-report-printed-{view}.png'}")
        browser.close()


def side_by_side(pages: list[Path], target: Path) -> None:
    """Printed pages next to each other on white, as one image."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in pages]
    sheet = Image.new("RGB", (sum(i.width for i in images) + 20 * (len(images) - 1), max(i.height for i in images)),
                      "white")
    x = 0
    for image in images:
        sheet.paste(image, (x, 0))
        x += image.width + 20
    sheet.save(target)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for view, hosted in (("plain", True), ("expert", False)):
        context, demo, url = serve(hosted)
        try:
            shoot(out, view, url, report=True)
        finally:
            demo.close()
            context.sessions.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
