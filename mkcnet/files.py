"""Writing files so that a kill at any moment leaves the old file or the new one, never a mix,
and reading the append-only logs that a kill may have cut mid-line."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "note.txt"
        >>> atomic_write(target, lambda tmp: tmp.write_text("done"))
        >>> target.read_text()
        'done'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append one line and make it durable (fsync) before returning."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines log; a torn line (a kill during an append) is skipped with a
    warning naming the file and line, the others are kept.

    Example:
        >>> import tempfile
        >>> log = Path(tempfile.mkdtemp()) / "history.jsonl"
        >>> _ = log.write_text('{"epoch": 1}\\n{"epo')
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     read_jsonl(log)
        [{'epoch': 1}]
    """
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path.name}, line {number}: not a complete record (a write was cut off); skipped",
                          stacklevel=2)
    return records
