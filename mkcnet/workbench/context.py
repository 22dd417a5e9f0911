"""What every page shares, built once per app and handed to each page's `build(context)`: the
model zoo, the decoded-image cache, the project's assets, the operator's data folder, the
bundled results packs, the hosting policy, and each visitor's session."""

from __future__ import annotations

import filecmp
import glob
import logging
from pathlib import Path

from mkcnet.errors import UserError
from mkcnet.project import project_path
from mkcnet.workbench.examples import Example, LabelNames, bundled_examples, data_examples, data_root_from
from mkcnet.workbench.hosting import Hosting
from mkcnet.workbench.imaging import ImageCache
from mkcnet.workbench.packs import PackStore
from mkcnet.workbench.sessions import Sessions, VisitorSession
from mkcnet.workbench.settings import WorkbenchSettings
from mkcnet.workbench.zoo import ModelZoo, default_roots

log = logging.getLogger("mkcnet.workbench")


class Workbench:
    """Example:
        >>> context = Workbench(settings=WorkbenchSettings(data=""))
        >>> context.hosting.hosted, context.default_data
        (False, '')
    """

    def __init__(self, zoo: ModelZoo | None = None, assets: Path | None = None, data_root: str | Path | None = None,
                 hosting: Hosting | None = None, settings: WorkbenchSettings | None = None):
        """`settings` (read from the environment when not given) decide what the other arguments
        leave open: the models, the operator's data set, the hosting policy."""
        self.settings = settings if settings is not None else WorkbenchSettings.read()
        self.zoo = zoo if zoo is not None else ModelZoo(default_roots(self.settings))
        self.assets = Path(assets) if assets is not None else project_path("assets")
        self.default_root: Path | None = None  # the operator's data set (--data, MKCNET_DATA): shown to everyone
        text = str(data_root if data_root is not None else self.settings.data)
        try:
            self.default_root = data_root_from(text)
        except UserError as err:  # a wrong MKCNET_DATA must not stop the app: say so, use the bundled examples
            log.warning("ignoring the data folder: %s", err)
            print(f"warning: ignoring the data folder ({err})")
        self.hosting = hosting if hosting is not None else Hosting.from_settings(
            self.settings, operator_data=str(self.default_root or ""))
        self.images = ImageCache()
        self.packs = PackStore(self.zoo, self.images)
        self.sessions = Sessions(self.packs, plain=self.hosting.hosted)  # hosted: visitors start in the plain view
        self.assessor = None  # /assess's models (workbench.assess sets it when the endpoint is added)

    @property
    def default_data(self) -> str:
        return str(self.default_root or "")

    def session(self, request=None, *received) -> VisitorSession:
        """The visitor's session; `received` are files their event brought (uploads: paths or
        lists of them), deleted when the session ends."""
        session = self.sessions.get(request)
        session.receive(*[[f for f in (v if isinstance(v, list | tuple) else [v]) if not self.serves(f)]
                          for v in received])
        return session

    def serves(self, file) -> bool:
        """Whether a file an event brought is Gradio's copy of one the app serves to everyone (a
        bundled asset, an example staged while the pages were built): a visitor who sends it back
        did not upload it, and their session must not delete it from under the others."""
        if not isinstance(file, str | Path) or not Path(file).is_file():
            return False
        target = Path(file)
        for root in (self.assets, self.sessions.get(None).folder):
            for shared in root.rglob(glob.escape(target.name)) if root.is_dir() else []:
                if shared.is_file() and shared != target and filecmp.cmp(shared, target, shallow=False):
                    return True
        return False

    def data_root(self, session: VisitorSession | None = None) -> Path | None:
        """The visitor's data set if they brought one, else the operator's, else None."""
        return session.data_root if session is not None and session.data_root is not None else self.default_root

    def examples(self, modality: str | None = None, data_root: Path | None = None, limit: int = 12,
                 names: LabelNames | None = None) -> list[Example]:
        """The images of a data set when there is one (captioned with their labels, in `names`
        where they name them: the page's model's), else the bundled examples of this modality
        (all of them when none fits)."""
        root = data_root if data_root is not None else self.default_root
        if root is not None:
            return data_examples(root, limit, names)
        bundled = bundled_examples(self.assets)
        return [e for e in bundled if modality is None or e.modality == modality] or bundled

    def example_of(self, file: str | None, session: VisitorSession, modality: str | None) -> Example | None:
        """The example the visitor picked from a gallery, when the page's file is still it, else
        None: its true labels can then be shown beside the prediction. An upload (or an API call)
        never picked anything, so it shows no label, whatever its bytes."""
        picked = session.picked
        if not file or picked is None:
            return None
        # Gradio hands the page its own copy of a picked file (same name, same bytes, another folder).
        target = Path(file)
        try:
            same = target.name == picked.name and filecmp.cmp(picked, target, shallow=False)
        except OSError:
            return None
        examples = self.examples(modality, self.data_root(session)) if same else []
        return next((e for e in examples if e.path == picked), None)

    def stage(self, path: Path, session: VisitorSession | None = None) -> str:
        """A file for the browser: bundled assets as they are, anything else copied into the
        visitor's session folder (or, while the pages are built, the app's own)."""
        return (session or self.sessions.get(None)).stage(path, self.assets)
