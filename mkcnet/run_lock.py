"""One writer per run folder: an advisory lock on RUN/.lock, held for the life of a run.

The lock is `fcntl.flock` on an open file, so the kernel drops it when its holder exits, however
it exits (a SIGKILL included): a lock file left behind by a killed run is never "stale", the next
run simply takes it. The holder writes its PID into the file, so a refused run can name it.
Readers (`mkcnet evaluate`, the workbench) take no lock: every run file is replaced atomically,
so they see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from mkcnet.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked (warned once)
    fcntl = None

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # folders this process holds → nesting depth (re-entrant: train → fit → calibrate)


class RunInUse(UserError):
    """Another live process holds the run folder."""


@contextlib.contextmanager
def hold_run(run_dir: str | Path) -> Iterator[Path]:
    """Hold RUN/.lock while the block runs; refuse with one line if another process holds it.

    Re-entrant within one process. If the folder did not exist and the block leaves nothing in it
    but the lock, the folder is removed again (a refused or failed start leaves no trace).

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp()) / "run"
        >>> with hold_run(run):
        ...     with hold_run(run):  # the same process may nest
        ...         (run / "config.json").write_text("{}")
        2
        >>> (run / LOCK_NAME).is_file()
        True
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield run_dir
        finally:
            _held[key] -= 1
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _acquire(run_dir)
    _held[key] = 1
    try:
        yield run_dir
    finally:
        del _held[key]
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        if fd is not None:
            os.close(fd)  # drops the lock


def _acquire(run_dir: Path) -> int | None:
    if fcntl is None:
        warnings.warn("file locks are not available on this platform: nothing stops two runs sharing "
                      f"{run_dir}", stacklevel=3)
        return None
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunInUse(f"{run_dir} is in use by another run (PID {holder}); wait for it to end, or choose "
                           "another --out") from None
        # The file may have been removed between open and flock (its holder tidied an empty folder):
        # a lock on a file no longer at that name locks nothing, so take the one that is there.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
