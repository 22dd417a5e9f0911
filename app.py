"""The MKCNet workbench: `python app.py` (also `mkcnet app`), and the Hugging Face Spaces entry.

Composes the pages in `pages/` (one module each) into one multipage Gradio app; the reusable
parts (model zoo, image input, readings, UI pieces) live in `mkcnet.workbench`. Runs from a
clone without installing the package (Spaces installs only requirements.txt). The arguments
are parsed before gradio or torch is imported, so `--help` answers at once.

    python app.py                     # http://127.0.0.1:7860
    MKCNET_DATA=path/to/dataset python app.py   # every setting: mkcnet/workbench/settings.py
"""

from __future__ import annotations

import argparse
import atexit
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

HOME = Path(__file__).resolve().parent
if str(HOME) not in sys.path:  # pages/ and mkcnet/ beside this file, wherever the process started
    sys.path.insert(0, str(HOME))

from mkcnet.errors import UserError  # noqa: E402  (after the path above)
from mkcnet.workbench.cli import add_arguments  # noqa: E402  (argparse only: no gradio, no torch)

if TYPE_CHECKING:
    import gradio as gr

    from mkcnet.workbench.context import Workbench

TITLE = "MKCNet workbench"
# Gradio's cache (uploads, outputs): every 10 minutes, files older than an hour go.
DELETE_CACHE = (600, 3600)
# A bounded queue: past 32 waiting events a visitor is told the app is busy, rather than piling up.
QUEUE = {"default_concurrency_limit": 2, "max_size": 32}


def build_app(context: Workbench | None = None) -> gr.Blocks:
    """The first page is the app's home; every other one gets its own route."""
    import gradio as gr

    from mkcnet.workbench.assess import add_assess_endpoint
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.ui import end_sessions_on_unload
    from pages import PAGES

    context = context if context is not None else Workbench()
    home, *others = PAGES
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE) as demo:
        gr.Navbar(main_page_name=home.title)
        home.module.build(context, demo)
        end_sessions_on_unload(context, demo)
        add_assess_endpoint(context)  # /assess: JSON for scripts, and the MCP tool with --mcp
    for page in others:
        with demo.route(page.title, page.path):
            gr.Navbar(main_page_name=home.title)
            page.module.build(context, demo)
    demo.queue(**QUEUE)
    return demo


def launch_options(context: Workbench) -> dict:
    """launch() arguments for every way of starting the app (CLI, app.py, tests)."""
    import gradio as gr

    css, head = context.assets / "workbench.css", context.assets / "workbench_head.html"
    return {
        "theme": gr.themes.Soft(primary_hue="teal", secondary_hue="amber"),
        "css_paths": [css] if css.is_file() else None,
        "head_paths": [head] if head.is_file() else None,
        "allowed_paths": [str(context.assets)],
        "max_file_size": "200mb",  # a bigger upload is refused with a message; bombs are caught by the reader
        "ssr_mode": False,  # server-side rendering needs node, and does not support multipage here
        "footer_links": ["api", "settings"],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="Start the MKCNet workbench (offline).")
    add_arguments(p)
    return p


def first_answer(url: str, timeout: float = 120.0) -> None:
    """Wait for the server's first page (its first render is slow work the port does not show)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=timeout).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def serve(args: argparse.Namespace, block: bool = True) -> gr.Blocks:
    import mkcnet.workbench  # noqa: F401  (the offline environment, before gradio loads)
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.settings import ROOTS_VARIABLE, WorkbenchSettings

    start = time.perf_counter()
    settings = WorkbenchSettings.from_args(args)
    context = Workbench(settings=settings)
    hosting = context.hosting
    atexit.register(context.sessions.shutdown)
    if not context.zoo.names():
        print("warning: no models found; see docs/workbench.md (checkpoints/, MKCNET_CHECKPOINTS)")
    demo = build_app(context)
    demo.launch(server_name=settings.host, server_port=settings.port, prevent_thread_lock=True,
                mcp_server=settings.mcp, **launch_options(context))
    # A stopped server (SIGTERM: Spaces, systemd, docker) shuts down cleanly, which deletes
    # Gradio's cache of this app, and leaves no visitor's files behind (atexit above).
    signal.signal(signal.SIGTERM, lambda *_: (demo.close(), sys.exit(0)))
    if hosting.hosted:
        print("hosted mode: visitors bring data by upload only; no server folder is read from a visitor's input")
    else:
        print(f"local mode: typed data folders must lie inside {', '.join(str(r) for r in hosting.data_roots)} "
              f"({ROOTS_VARIABLE})")
    first_answer(demo.local_url)  # "ready" when a browser gets the page, not when the port opens
    print(f"workbench ready in {time.perf_counter() - start:.1f} s at http://{settings.host}:{settings.port}/")
    # UMAP's imports and numba code, in the background once the first page is served and its maps
    # drawn (an import beside them slows both, see docs/workbench.md "Start-up"): the first UMAP of
    # a pack without stored coordinates then takes a fraction of a second, not 15-30 s.
    from mkcnet.analysis.embedding import start_umap_warm_up

    start_umap_warm_up(delay=10.0)
    if block:
        demo.block_thread()
    return demo


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        serve(args)
    except UserError as err:
        print(f"workbench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
