"""Writing files so that a kill at any moment leaves the old file or the new one, never a mix,
reading the append-only logs that a kill may have cut mid-line, and saying in one line why a
write failed when the disk is full or read-only."""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path` (`.NAME.tmpPID`), make it durable
    (fsync), then rename it over `path` and make the rename durable too. A failure, a full disk
    included, leaves `path` as it was and removes the temporary file.

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
        with open(tmp, "rb+") as f:  # the data on the disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: fsync the directory; elsewhere nothing to do)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# What a killed writer leaves: atomic_write's `.NAME.tmpPID`, and `.tmpXXXXXX` (six letters or
# digits), the temporary name that safetensors' save_file (Rust's tempfile) writes before its rename.
_OURS = re.compile(r"\..+\.tmp(\d+)")
_SAFETENSORS = re.compile(r"\.tmp[A-Za-z0-9]{6}")


def remove_temporaries(folder: Path, exclusive: bool = False) -> list[Path]:
    """Remove the temporary files that killed writers left in `folder`; return them.

    `exclusive`: the caller is the folder's only writer (it holds the run lock), so every
    temporary is stale. Otherwise only those whose writer (the PID in the name) has gone.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in (".state.safetensors.tmp999999999", ".tmpAb12Cd", "keep.txt"):
        ...     _ = (folder / name).write_text("x")
        >>> sorted(p.name for p in remove_temporaries(folder, exclusive=True))
        ['.state.safetensors.tmp999999999', '.tmpAb12Cd']
    """
    removed = []
    for path in folder.glob(".*tmp*"):
        ours = _OURS.fullmatch(path.name)
        stale = (exclusive and (ours or _SAFETENSORS.fullmatch(path.name))) or (ours and not _alive(int(ours[1])))
        if stale and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # gone, or never a process ID
        return False
    return True


# errno → what a full, read-only or forbidden disk means for a folder, in words.
_WRITE_FAILURES = {
    errno.ENOSPC: "no space left on the device holding {}",
    errno.EDQUOT: "the disk quota is exhausted for {}",
    errno.EROFS: "{} is on a read-only file system",
    errno.EACCES: "no permission to write in {}",
    errno.EPERM: "no permission to write in {}",
}


def write_failure(err: BaseException, folder: Path | None = None) -> str | None:
    """One line for a write that failed because of the disk (full, read-only, forbidden), naming
    the folder (`folder`, else the failed file's); None for any other error.

    Example:
        >>> write_failure(OSError(errno.ENOSPC, "No space left on device", "/runs/a/.state.tmp1"))
        'no space left on the device holding /runs/a'
    """
    if not isinstance(err, OSError) or err.errno not in _WRITE_FAILURES:
        return None
    if folder is None:
        folder = Path(err.filename).parent if err.filename else Path(".")
    return _WRITE_FAILURES[err.errno].format(folder)
