"""Who may bring what into the workbench (docs/security.md is the threat model).

Local mode (bound to a loopback address): the operator is the visitor; a typed data folder is
accepted when it lies inside one of the allowed roots (`MKCNET_DATA_ROOTS`, os.pathsep-separated;
default: the current directory; the operator's own `--data`/`MKCNET_DATA` always). Hosted mode
(a non-loopback address, `SPACE_ID` set by Hugging Face Spaces, or `--hosted`): no server path
is ever taken from a visitor; data comes as an upload (a zip, or a split file plus its images)
into the visitor's own session folder. Either way an upload is checked here: size, file count,
names that would leave the folder (zip-slip), links, and compression bombs.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mkcnet.errors import UserError
from mkcnet.workbench.examples import SPLIT_FILES, data_root_from
from mkcnet.workbench.settings import ROOTS_VARIABLE, WorkbenchSettings

MAX_UPLOAD_BYTES = 200 * 2**20  # what an extracted data set may hold
MAX_UPLOAD_FILES = 5000
MAX_RATIO = 200  # uncompressed / compressed beyond this is a bomb, not images


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Hosting:
    hosted: bool
    data_roots: tuple[Path, ...] = ()  # local mode: where typed data folders may lie
    max_bytes: int = MAX_UPLOAD_BYTES
    max_files: int = MAX_UPLOAD_FILES
    trusted: tuple[Path, ...] = field(default_factory=tuple)  # the operator's own data folders

    @classmethod
    def from_settings(cls, settings: WorkbenchSettings, operator_data: str | None = None) -> Hosting:
        """Hosted when asked, on Spaces, or when serving beyond this machine."""
        hosted = bool(settings.hosted or settings.on_space or not is_loopback(settings.host))
        roots = tuple(p.resolve() for p in settings.data_roots) or (Path.cwd().resolve(),)
        data = operator_data if operator_data is not None else settings.data
        trusted = (Path(data).expanduser().resolve(),) if data else ()
        return cls(hosted, () if hosted else roots, trusted=trusted)

    @classmethod
    def decide(cls, host: str, hosted: bool = False, operator_data: str | None = None,
               env: Mapping[str, str] | None = None) -> Hosting:
        """`from_settings` for an address, the flag and an environment (os.environ by default)."""
        return cls.from_settings(WorkbenchSettings.read(env, host=host, hosted=hosted), operator_data or "")

    def typed_path(self, text: str | None, what: str = "folder") -> Path | None:
        """A server path a visitor typed (local mode only), inside an allowed root; None if empty."""
        if not str(text or "").strip():
            return None
        if self.hosted:
            raise UserError("this workbench is hosted: it reads no server folder a visitor names; "
                            "upload your data set (a zip, or a split file and its images)")
        path = Path(str(text).strip()).expanduser().resolve()
        if not any(path.is_relative_to(r) for r in self.data_roots + self.trusted):
            raise UserError(f"{what} {path.name or path} is outside the folders this workbench may read "
                            f"(set {ROOTS_VARIABLE} to allow more)")
        return path

    def typed_folder(self, text: str | None) -> Path | None:
        """A data folder a visitor typed: allowed, existing, holding a split file."""
        return data_root_from(self.typed_path(text, "data folder"))


def extract_dataset(uploads: list[Path], folder: Path, limits: Hosting) -> Path:
    """A visitor's upload, checked and laid out in `folder` (emptied first): one zip, or loose
    files (a split file plus its images, by their own names). Returns the data-set root: the
    folder that holds the split file."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if not uploads:
        raise UserError("upload a zip of your data set, or a split file (val.csv) and its images")
    if len(uploads) == 1 and zipfile.is_zipfile(uploads[0]):
        extract_zip(uploads[0], folder, limits)
    else:
        _copy_files(uploads, folder, limits)
    found = sorted({p.parent for name in SPLIT_FILES for p in folder.rglob(name) if p.is_file()},
                   key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise UserError(f"the upload holds no split file ({', '.join(SPLIT_FILES[:3])}) with rows "
                        "image_path,diagnosis,quality")
    return found[0]


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UserError(f"the zip holds a file that would land outside its folder: {path.name or name!r}")
    return path


def extract_zip(archive: Path, folder: Path, limits: Hosting) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise UserError(f"cannot read the zip: {err}") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_files:
            raise UserError(f"the zip holds {len(members)} files; at most {limits.max_files} are accepted")
        declared = sum(m.file_size for m in members)
        if declared > limits.max_bytes:
            raise UserError(f"the zip unpacks to {declared / 2**20:.0f} MB; at most {limits.max_bytes / 2**20:.0f} MB")
        written = 0
        for member in members:
            relative = _safe_member(member.filename)
            if stat.S_ISLNK(member.external_attr >> 16):
                raise UserError(f"the zip holds a link ({relative.name}); links are refused")
            if member.compress_size and member.file_size / member.compress_size > MAX_RATIO and member.file_size > 2**20:
                raise UserError(f"{relative.name} is compressed {member.file_size // member.compress_size}:1, "
                                "which no image is: refused as a zip bomb")
            target = folder.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Count what is really written: the declared sizes may lie.
            with zf.open(member) as source, open(target, "wb") as sink:
                while chunk := source.read(2**20):
                    written += len(chunk)
                    if written > limits.max_bytes:
                        raise UserError(f"the zip unpacks to more than {limits.max_bytes / 2**20:.0f} MB")
                    sink.write(chunk)


def _copy_files(uploads: list[Path], folder: Path, limits: Hosting) -> None:
    if len(uploads) > limits.max_files:
        raise UserError(f"{len(uploads)} files uploaded; at most {limits.max_files} are accepted")
    total = sum(p.stat().st_size for p in uploads)
    if total > limits.max_bytes:
        raise UserError(f"the upload holds {total / 2**20:.0f} MB; at most {limits.max_bytes / 2**20:.0f} MB")
    for upload in uploads:
        shutil.copyfile(upload, folder / Path(upload).name)  # by its own name, flat


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a server started next (tests, benchmarks).

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
