"""Each visitor's own data: the data set they uploaded or named, the results packs they added,
the example copies made for them. Keyed by Gradio's session hash, kept under one temporary
folder of the app's, and deleted when the session ends (the page's unload event), when it has
been idle too long, or when too many sessions are open (the oldest idle one goes first)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from mkcnet.errors import UserError
from mkcnet.workbench.examples import data_root_from
from mkcnet.workbench.hosting import Hosting, extract_dataset
from mkcnet.workbench.packs import PackStore

IDLE_SECONDS = 3600
MAX_SESSIONS = 64
MAX_SESSION_PACK_BYTES = 256 * 2**20
MAX_SESSION_IMAGES = 400  # images kept for the browser per session (≈ 40 MB)
LOCAL_KEY = "local"  # calls without a Gradio request (tests, scripts)


class VisitorSession:
    def __init__(self, key: str, folder: Path, shared: PackStore):
        self.key = key
        self.folder = folder
        self.data_root: Path | None = None
        self.data_label = ""  # what the pages call the data set: a folder's or an upload's own name
        self.packs = PackStore(shared.zoo, shared.images, shared=shared, decoded=folder / "decoded")
        self.received: set[Path] = set()  # the visitor's uploads, in Gradio's upload folder
        self.picked: Path | None = None  # the example last picked from a gallery (a server-side path)
        self.last_seen = time.monotonic()
        self.lock = threading.Lock()
        # Salts the images made for this visitor, so Gradio's copy of each is theirs alone (Gradio
        # names its copies by content): deleting it when they leave takes nothing from another.
        self._salt = PngInfo()
        self._salt.add_text("session", secrets.token_hex(8))

    def receive(self, *values) -> None:
        """Note the uploads an event brought (file paths, or lists of them): they go with the session."""
        uploads = Path(upload_folder()).resolve()
        for value in values:
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str | Path) and Path(item).resolve().is_relative_to(uploads):
                    self.received.add(Path(item))

    def use_folder(self, root: Path | None) -> None:
        self.data_root, self.data_label = root, (root.name if root is not None else "")

    def use_upload(self, files: list[Path], hosting: Hosting) -> Path:
        """Extract an upload into this session's folder and make it the data set."""
        with self.lock:
            root = data_root_from(extract_dataset([Path(f) for f in files], self.folder / "data", hosting))
            self.data_root, self.data_label = root, Path(files[0]).name if len(files) == 1 else f"{len(files)} files"
            return root

    def stage(self, path: Path, shareable: Path) -> str:
        """A file the page may hand to the browser: as it is inside `shareable` (the app's
        assets), else a copy in this session's folder (deleted with the session)."""
        path = Path(path)
        if path.resolve().is_relative_to(shareable.resolve()):
            return str(path)
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        target = self.folder / "staged" / digest / path.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return str(target)

    def image_file(self, array: np.ndarray) -> str:
        """An image for the browser as a PNG file in this session's folder, named by its content
        and written atomically. Gradio copies a file into its cache under a temporary name, but
        writes an array in place, where two visitors shown the same image race (one may be
        served the other's half-written file)."""
        data = io.BytesIO()
        Image.fromarray(array).save(data, format="PNG", compress_level=1, pnginfo=self._salt)
        digest = hashlib.sha1(data.getvalue()).hexdigest()[:20]
        target = self.folder / "out" / f"{digest}.png"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            made = sorted(target.parent.glob("*.png"), key=lambda p: p.stat().st_mtime)
            for old in made[:len(made) - MAX_SESSION_IMAGES + 1]:  # Gradio has its own copies by now
                old.unlink(missing_ok=True)
            staging = target.with_suffix(f".{threading.get_ident()}.tmp")
            staging.write_bytes(data.getvalue())
            os.replace(staging, target)
        return str(target)

    def check_budget(self) -> None:
        if self.packs.nbytes() > MAX_SESSION_PACK_BYTES:
            raise UserError("this session holds as many results as it may; reload the page to start afresh")

    def close(self) -> None:
        """Leave nothing of the visitor's: their uploads, Gradio's copies of every file made for
        them, the decoded images read from either (memory and disk), their folder and packs."""
        made = [p for p in self.folder.rglob("*") if p.is_file()] if self.folder.is_dir() else []
        uploads = Path(upload_folder()).resolve()
        for path in [*self.received, *made]:
            self.packs.images.forget(path)
            for copy in {*gradio_copies(path), path}:
                copy.unlink(missing_ok=True)
                if copy.parent.resolve().parent == uploads:
                    with contextlib.suppress(OSError):
                        copy.parent.rmdir()  # Gradio's folder per file, once empty
        self.packs.images.forget(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.received.clear()
        self.packs.clear()


def upload_folder() -> str:
    """Gradio's folder of uploads and of its copies of the files events return."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def gradio_copies(path: Path) -> list[Path]:
    """Where Gradio keeps its copy of `path` when an event returns it: a folder named by the
    file's content (gradio.processing_utils.save_file_to_cache; gradio is pinned below 7)."""
    from gradio.processing_utils import hash_file
    from gradio_client.utils import strip_invalid_filename_characters

    try:
        digest = hash_file(path)
    except OSError:
        return []
    return [Path(upload_folder()) / digest / strip_invalid_filename_characters(path.name)]


class Sessions:
    def __init__(self, shared: PackStore, idle_seconds: float = IDLE_SECONDS, max_sessions: int = MAX_SESSIONS):
        self.shared = shared
        self._base: Path | None = None
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: dict[str, VisitorSession] = {}
        self._lock = threading.Lock()

    @property
    def base(self) -> Path:
        """The app's folder for sessions, made on first use and removed when this object goes
        (or the process ends), so no app, test or script leaves one behind."""
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="mkcnet-sessions-"))
            weakref.finalize(self, shutil.rmtree, self._base, True)
        return self._base

    def get(self, request=None) -> VisitorSession:
        """The session of a Gradio request (its session hash), created on first use."""
        key = str(getattr(request, "session_hash", None) or LOCAL_KEY)
        with self._lock:
            self._sweep(keep=key)
            session = self._sessions.get(key)
            if session is None:
                # The folder is named by a digest: the session hash is the client's to choose.
                folder = self.base / hashlib.sha256(key.encode()).hexdigest()[:24]
                session = self._sessions[key] = VisitorSession(key, folder, self.shared)
            session.last_seen = time.monotonic()
            return session

    def close(self, request=None) -> None:
        """End a session (Gradio's unload event): its files and packs go."""
        key = str(getattr(request, "session_hash", None) or LOCAL_KEY)
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def _sweep(self, keep: str) -> None:
        """Close sessions idle too long and, when `keep` would be one too many, the oldest idle."""
        now = time.monotonic()
        idle = sorted((s.last_seen, k) for k, s in self._sessions.items() if k != keep)
        for seen, key in idle:
            full = keep not in self._sessions and len(self._sessions) >= self.max_sessions
            if now - seen > self.idle_seconds or full:
                self._sessions.pop(key).close()

    def shutdown(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
