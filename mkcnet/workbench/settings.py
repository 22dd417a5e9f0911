"""The workbench's settings, read once — command line first, then the environment — into one
typed object that the app hands down (context, zoo, hosting, pages). Nothing else in the
workbench reads the environment.

| setting | flag | environment |
| --- | --- | --- |
| address, port | `--host`, `--port` | `GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT` |
| models | `--checkpoints DIR[:DIR…]` | `MKCNET_CHECKPOINTS` (else the project's checkpoints/) |
| the operator's data set | `--data DIR` | `MKCNET_DATA` |
| where typed data folders may lie (local mode) | | `MKCNET_DATA_ROOTS` (else the current directory) |
| hosted mode | `--hosted` | `SPACE_ID` (Hugging Face Spaces) |
| the Compare page's benchmark table | | `MKCNET_BENCH` (a `mkcnet bench` output folder) |
| the MCP server (the `assess` tool) | `--mcp` | |

Kept free of gradio and torch: `mkcnet --help` builds the app's arguments from it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mkcnet.errors import UserError

ROOTS_VARIABLE = "MKCNET_DATA_ROOTS"


def _paths(text: str | None) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser() for p in (text or "").split(os.pathsep) if p.strip())


@dataclass(frozen=True)
class WorkbenchSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    hosted: bool = False  # asked for; hosting.Hosting also decides so on Spaces and for a non-loopback host
    on_space: bool = False
    checkpoints: tuple[Path, ...] = ()  # empty: the project's checkpoints/
    data: str = ""  # the operator's data set, shown to every visitor; "" for none
    data_roots: tuple[Path, ...] = ()  # empty: the current directory
    bench: Path | None = None
    mcp: bool = False  # also serve the endpoints as MCP tools

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None, *, host: str | None = None, port: int | None = None,
             hosted: bool = False, checkpoints: str | None = None, data: str | None = None,
             mcp: bool = False) -> WorkbenchSettings:
        """The settings from the command line's values (None: not given) and then `env`.

        Example:
            >>> s = WorkbenchSettings.read({"MKCNET_DATA": "ct", "GRADIO_SERVER_PORT": "8000"}, host="0.0.0.0")
            >>> s.host, s.port, s.data, s.on_space
            ('0.0.0.0', 8000, 'ct', False)
        """
        env = os.environ if env is None else env
        if port is None:
            text = env.get("GRADIO_SERVER_PORT") or "7860"
            if not text.strip().isdigit():
                raise UserError(f"GRADIO_SERVER_PORT is {text[:40]!r}: expected a port number")
            port = int(text)
        return cls(
            host=host if host is not None else env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            port=port,
            hosted=bool(hosted),
            on_space=bool(env.get("SPACE_ID")),
            checkpoints=_paths(checkpoints if checkpoints is not None else env.get("MKCNET_CHECKPOINTS")),
            data=str(data if data is not None else env.get("MKCNET_DATA", "")),
            data_roots=_paths(env.get(ROOTS_VARIABLE)),
            bench=Path(env["MKCNET_BENCH"]) if env.get("MKCNET_BENCH") else None,
            mcp=bool(mcp),
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> WorkbenchSettings:
        """The settings of `python app.py` / `mkcnet app` (the parser of `add_arguments`)."""
        return cls.read(env, host=args.host, port=args.port, hosted=args.hosted, checkpoints=args.checkpoints,
                        data=args.data, mcp=getattr(args, "mcp", False))
