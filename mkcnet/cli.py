"""The `mkcnet` command. Each feature area registers its own sub-commands.

A command group is a module with `register(subparsers)`; it adds its parsers and sets
`func` on each, a callable taking the parsed namespace. Errors a user can fix are raised
as `UserError` and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mkcnet.errors import UserError

COMMAND_GROUPS = (
    "mkcnet.training.cli",
    "mkcnet.inference.cli",
    "mkcnet.degradation.cli",
    "mkcnet.synth.cli",
    "mkcnet.analysis.cli",
    "mkcnet.workbench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkcnet",
        description="MKCNet: image quality-aware diagnosis (train, evaluate, predict, degrade, ...).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_GROUPS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, FileNotFoundError) as err:
        print(f"mkcnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mkcnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
