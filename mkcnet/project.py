"""Where the project's own files are: the workbench (`app.py`, `pages/`), `assets/`,
`checkpoints/` and `docs/`.

The package holds the code; those files sit beside it in a clone. One resolver finds them, in
this order:

1. `MKCNET_HOME`, a folder laid out like the repository (a clone, or a copy of its `app.py`,
   `pages/`, `assets/` and `checkpoints/` next to a non-editable install);
2. the clone this package was imported from (an editable install, `python app.py`, Spaces);
3. the current directory, when it is laid out like the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from mkcnet.errors import UserError

HOME_VARIABLE = "MKCNET_HOME"
# A folder is a project home when it holds the workbench and at least one of its data folders.
MARKER = "app.py"
FOLDERS = ("assets", "checkpoints")


def is_project_home(folder: Path) -> bool:
    return (folder / MARKER).is_file() and any((folder / name).is_dir() for name in FOLDERS)


def find_project_home() -> Path | None:
    """The project home, or None when there is none (a bare install outside a clone)."""
    configured = os.environ.get(HOME_VARIABLE, "").strip()
    if configured:
        folder = Path(configured).expanduser().resolve()
        if not is_project_home(folder):
            raise UserError(f"{HOME_VARIABLE} is not a project folder (it needs {MARKER} and "
                            f"{' or '.join(f + '/' for f in FOLDERS)}): {configured}")
        return folder
    for folder in (Path(__file__).resolve().parents[1], Path.cwd().resolve()):
        if is_project_home(folder):
            return folder
    return None


def project_home() -> Path:
    """The project home; a clear error when there is none."""
    home = find_project_home()
    if home is None:
        raise UserError(f"cannot find the project's files ({MARKER}, assets/, checkpoints/): run from a clone "
                        f"of the repository or set {HOME_VARIABLE} to one")
    return home


def project_path(*parts: str) -> Path:
    """A path inside the project home, e.g. project_path("checkpoints")."""
    return project_home().joinpath(*parts)
