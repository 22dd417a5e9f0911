"""`mkcnet app`: start the workbench (a local web UI that works offline).

Kept free of gradio imports: every `mkcnet` command builds this parser."""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--checkpoints", help="folder(s) of bundled models or training run directories, "
                                         "os.pathsep-separated (default: MKCNET_CHECKPOINTS, else checkpoints/)")
    p.add_argument("--data", help="a data set in the project's split format (default: MKCNET_DATA)")


def run_app(args: argparse.Namespace) -> int:
    from mkcnet.workbench.app import serve  # the package sets the offline environment first

    serve(args)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="start the workbench web UI (Gradio, offline)",
                              description="Start the MKCNet workbench at http://HOST:PORT/ (default 127.0.0.1:7860).")
    add_arguments(p)
    p.set_defaults(func=run_app)
