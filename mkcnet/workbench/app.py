"""The workbench app: one Blocks, one route per page module, launched offline.

    python app.py                     # or: mkcnet app
    MKCNET_DATA=path/to/dataset python app.py

Importing `mkcnet.workbench` (the package) sets the offline environment before gradio loads.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import mkcnet.workbench  # noqa: F401  (offline environment first)

import gradio as gr

from mkcnet.workbench.cli import add_arguments
from mkcnet.workbench.context import ASSETS, Workbench
from mkcnet.workbench.pages import PAGES
from mkcnet.workbench.zoo import ModelZoo

TITLE = "MKCNet workbench"
CSS = ASSETS / "workbench.css"
HEAD = ASSETS / "workbench_head.html"


def build_app(context: Workbench | None = None) -> gr.Blocks:
    """The first page is the app's home; every other one gets its own route."""
    context = context if context is not None else Workbench()
    home, *others = PAGES
    with gr.Blocks(title=TITLE) as demo:
        gr.Navbar(main_page_name=home.title)
        home.module.build(context)
    for page in others:
        with demo.route(page.title, page.path):
            gr.Navbar(main_page_name=home.title)
            page.module.build(context)
    return demo


def launch_options(context: Workbench) -> dict:
    """launch() arguments for every way of starting the app (CLI, app.py, tests)."""
    return {
        "theme": gr.themes.Soft(primary_hue="teal", secondary_hue="amber"),
        "css_paths": [CSS] if CSS.is_file() else None,
        "head_paths": [HEAD] if HEAD.is_file() else None,
        "allowed_paths": [str(context.assets)],
        "max_file_size": "200mb",  # a bigger upload is refused with a message; bombs are caught by the reader
        "ssr_mode": False,  # server-side rendering needs node, and does not support multipage here
        "footer_links": ["api", "settings"],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="Start the MKCNet workbench (offline).")
    add_arguments(p)
    return p


def serve(args: argparse.Namespace, block: bool = True) -> gr.Blocks:
    start = time.perf_counter()
    roots = [Path(r) for r in args.checkpoints.split(os.pathsep)] if args.checkpoints else None
    context = Workbench(ModelZoo(roots), data_root=args.data)
    if not context.zoo.names():
        print("warning: no models found; see docs/workbench.md (checkpoints/, MKCNET_CHECKPOINTS)")
    demo = build_app(context)
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, **launch_options(context))
    print(f"workbench ready in {time.perf_counter() - start:.1f} s at http://{args.host}:{args.port}/")
    if block:
        demo.block_thread()
    return demo


def main(argv: list[str] | None = None) -> int:
    serve(parser().parse_args(argv))
    return 0
