"""`mkcnet app`: start the workbench (the project's `app.py`, found by `mkcnet.project`).

Kept free of gradio and torch: every `mkcnet` command builds this parser, and `app.py` parses
its arguments with `add_arguments` before it imports anything heavy."""

from __future__ import annotations

import argparse
import importlib.util


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are None: WorkbenchSettings reads the environment (the one place that does).
    p.add_argument("--host", help="address to listen on (default: GRADIO_SERVER_NAME, else 127.0.0.1; "
                                  "0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT, else 7860)")
    p.add_argument("--checkpoints", help="folder(s) of bundled models or training run directories, "
                                         "os.pathsep-separated (default: MKCNET_CHECKPOINTS, else checkpoints/)")
    p.add_argument("--data", help="a data set in the project's split format, shown to every visitor (default: MKCNET_DATA)")
    p.add_argument("--hosted", action="store_true",
                   help="hosted mode even on a loopback address (it is on by itself for a non-loopback --host "
                        "and on Hugging Face Spaces): visitors upload data, no server folder is read from their input")
    p.add_argument("--mcp", action="store_true",
                   help="also serve the endpoints as MCP tools at /gradio_api/mcp/ (the `assess` tool: one image's "
                        "diagnosis, quality, calibrated confidence and out-of-distribution verdict as JSON; "
                        "needs gradio[mcp])")


def run_app(args: argparse.Namespace) -> int:
    from mkcnet.project import project_path

    spec = importlib.util.spec_from_file_location("app", project_path("app.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    app.serve(args)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="start the workbench web UI (Gradio, offline)",
                              description="Start the MKCNet workbench at http://HOST:PORT/ (default 127.0.0.1:7860). "
                                          "It runs the project's app.py: from a clone, or from MKCNET_HOME.")
    add_arguments(p)
    p.set_defaults(func=run_app)
