"""The `mkcnet` command. Each feature area registers its own sub-commands.

A command group is a module with `register(subparsers)`; it adds its parsers and sets
`func` on each, a callable taking the parsed namespace. Errors a user can fix are raised
as `UserError` and printed as one line, without a traceback; so is a write that fails because
the disk is full or read-only.
"""

from __future__ import annotations

import argparse
import sys

# Each group's module imports argparse only; the heavy parts load inside the commands that run.
from mkcnet.analysis import cli as analysis_cli
from mkcnet.degradation import cli as degradation_cli
from mkcnet.errors import UserError
from mkcnet.files import write_failure
from mkcnet.inference import cli as inference_cli
from mkcnet.synth import cli as synth_cli
from mkcnet.training import cli as training_cli
from mkcnet.workbench import cli as workbench_cli

COMMAND_GROUPS = (training_cli, inference_cli, degradation_cli, synth_cli, analysis_cli, workbench_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkcnet",
        description="MKCNet: image quality-aware diagnosis (train, evaluate, predict, degrade, ...).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, FileNotFoundError) as err:
        print(f"mkcnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        failure = write_failure(err)  # a full, read-only or forbidden output folder: one line
        if failure is None:
            raise
        print(f"mkcnet {args.command}: error: {failure}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mkcnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
