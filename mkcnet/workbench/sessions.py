"""Each visitor's own data: the data set they uploaded or named, the results packs they added,
the example copies made for them. Kept under one temporary folder of the app's, and deleted when
the session ends (the last of the visitor's pages closes), when it has been idle too long, or
when too many sessions are open (the oldest idle one goes first).

Gradio gives every page (every route of the app, every reload) its own session hash. So that a
visitor's data set and results follow them from page to page, each page, as it opens, links its
hash to a visitor key the server issued to that browser (`Sessions.link`, kept by the browser in
a `gr.BrowserState`); a page that never links (an API client) is a visitor of its own."""

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
# After a visitor's last page closes, their session waits this long for the next page (a click
# on the navigation bar closes one page before the next one opens) before it goes.
GRACE_SECONDS = 20.0


class VisitorSession:
    def __init__(self, key: str, folder: Path, shared: PackStore, plain: bool = False):
        self.key = key
        self.plain = plain  # readings in a clinician's words (the plain view), else the expert's
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
    def __init__(self, shared: PackStore, idle_seconds: float = IDLE_SECONDS, max_sessions: int = MAX_SESSIONS,
                 grace_seconds: float = GRACE_SECONDS, plain: bool = False):
        self.shared = shared
        self.plain = plain  # the view a new visitor starts with (plain when hosted)
        self._base: Path | None = None
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self.grace_seconds = grace_seconds
        self._sessions: dict[str, VisitorSession] = {}
        self._pages: dict[str, str] = {}  # a page's session hash → the visitor key it linked to
        self._issued: set[str] = set()  # visitor keys this server issued (a client cannot pick one)
        # Encrypts the key in the browser's storage: one for all the app's pages, new at each start.
        self.browser_secret = secrets.token_hex(16)
        self._lock = threading.Lock()

    @property
    def base(self) -> Path:
        """The app's folder for sessions, made on first use and removed when this object goes
        (or the process ends), so no app, test or script leaves one behind."""
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="mkcnet-sessions-"))
            weakref.finalize(self, shutil.rmtree, self._base, True)
        return self._base

    def _key(self, request) -> str:
        page = str(getattr(request, "session_hash", None) or LOCAL_KEY)
        return self._pages.get(page, page)

    def get(self, request=None) -> VisitorSession:
        """The session of a Gradio request (its page's visitor), created on first use."""
        with self._lock:
            key = self._key(request)
            self._sweep(keep=key)
            session = self._sessions.get(key)
            if session is None:
                # The folder is named by a digest: the session hash is the client's to choose.
                folder = self.base / hashlib.sha256(key.encode()).hexdigest()[:24]
                session = self._sessions[key] = VisitorSession(key, folder, self.shared, self.plain)
            session.last_seen = time.monotonic()
            return session

    def link(self, visitor: str | None, request) -> str:
        """Join a page to its browser's visitor: `visitor` is the key the browser kept, honoured
        only when this server issued it and the visitor is still here; otherwise the page gets a
        new key. What the page did before it linked (its opening events) joins the visitor.
        Returns the key for the browser to keep.

        Example:
            >>> from mkcnet.workbench.context import Workbench
            >>> sessions = Workbench(data_root="").sessions
            >>> page = lambda h: type("Request", (), {"session_hash": h})()  # two pages of one browser
            >>> key = sessions.link(None, page("a"))
            >>> sessions.link(key, page("b")) == key and sessions.get(page("a")) is sessions.get(page("b"))
            True
        """
        page = str(getattr(request, "session_hash", None) or "")
        if not page:
            return visitor or ""
        with self._lock:
            if not (isinstance(visitor, str) and visitor in self._issued and visitor in self._sessions):
                visitor = secrets.token_hex(16)
                self._issued.add(visitor)
            self._sweep(keep=visitor)
            before = self._sessions.pop(page, None)  # the page's own session, from events before the link
            if before is not None and visitor not in self._sessions:
                before.key = visitor
                self._sessions[visitor] = before
            elif before is not None:
                before.close()
            self._pages[page] = visitor
            self._sessions.setdefault(visitor, VisitorSession(
                visitor, self.base / hashlib.sha256(visitor.encode()).hexdigest()[:24], self.shared, self.plain))
            self._sessions[visitor].last_seen = time.monotonic()
            return visitor

    def close(self, request=None) -> None:
        """A page closed (Gradio's unload event): a visitor with no page left goes after the
        grace period, files and packs; a page that never linked goes at once."""
        page = str(getattr(request, "session_hash", None) or LOCAL_KEY)
        with self._lock:
            key = self._pages.pop(page, page)
            if key in self._pages.values():
                return  # another of the visitor's pages is open
            ended = self._end(key) if key == page or self.grace_seconds <= 0 else None
        if ended is not None:
            ended.close()
        if key == page or self.grace_seconds <= 0:
            return
        timer = threading.Timer(self.grace_seconds, self._end_if_left, (key,))
        timer.daemon = True
        timer.start()

    def _end_if_left(self, key: str) -> None:
        with self._lock:
            ended = self._end(key) if key not in self._pages.values() else None
        if ended is not None:
            ended.close()

    def _end(self, key: str) -> VisitorSession | None:
        """Take a visitor's session out (the caller holds the lock, and closes what it gets)."""
        self._issued.discard(key)
        self._pages = {page: k for page, k in self._pages.items() if k != key}
        return self._sessions.pop(key, None)

    def _sweep(self, keep: str) -> None:
        """Close sessions idle too long and, when `keep` would be one too many, the oldest idle."""
        now = time.monotonic()
        idle = sorted((s.last_seen, k) for k, s in self._sessions.items() if k != keep)
        for seen, key in idle:
            full = keep not in self._sessions and len(self._sessions) >= self.max_sessions
            if now - seen > self.idle_seconds or full:
                self._end(key).close()

    def shutdown(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()
            self._pages.clear()
            self._issued.clear()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
