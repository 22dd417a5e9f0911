"""Progress of the long commands, on stderr (stdout keeps the results: `--format json` parses):
a line as a command starts its silent seconds (loading a model, reading packs), and tqdm bars on
a terminal. `quiet` silences both."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

# What the library reports to whoever shows progress (a CLI line, a bar, a gr.Progress):
# (share done, 0..1; what is being done now).
Report = Callable[[float, str], None]


def say(message: str, quiet: bool = False) -> None:
    """One line on stderr, at once."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def bar(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None, unit: str = "it",
        quiet: bool = False):
    """A tqdm bar on stderr, drawn on a terminal only (a log gets no carriage returns); gone when done."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                disable=True if quiet else None)


def lines(prefix: str, quiet: bool = False) -> Report:
    """A `Report` for the command line: a line on stderr each time the step changes."""
    last = [None]

    def report(share: float, what: str) -> None:
        if what != last[0]:
            last[0] = what
            say(f"{prefix}: {what}…", quiet)

    return report


def scaled(report: Report | None, start: float, end: float, prefix: str = "") -> Report | None:
    """`report` for one part of a longer job: its 0..1 mapped onto start..end, its text prefixed."""
    if report is None:
        return None
    return lambda share, what: report(start + (end - start) * share, prefix + what)
