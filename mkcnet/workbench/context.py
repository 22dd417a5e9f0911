"""What every page shares, built once per app and handed to each page's `build(context)`: the
model zoo, the decoded-image cache, the project's assets, the data folder, and the results packs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mkcnet.errors import UserError
from mkcnet.project import project_path
from mkcnet.workbench.examples import Example, bundled_examples, data_examples, data_root_from
from mkcnet.workbench.imaging import ImageCache
from mkcnet.workbench.packs import PackStore
from mkcnet.workbench.zoo import ModelZoo

log = logging.getLogger("mkcnet.workbench")


class Workbench:
    def __init__(self, zoo: ModelZoo | None = None, assets: Path | None = None, data_root: str | Path | None = None):
        self.zoo = zoo if zoo is not None else ModelZoo()
        self.assets = Path(assets) if assets is not None else project_path("assets")
        self.default_data = str(data_root if data_root is not None else os.environ.get("MKCNET_DATA", ""))
        try:
            data_root_from(self.default_data)
        except UserError as err:  # a wrong MKCNET_DATA must not stop the app: say so, use the bundled examples
            log.warning("ignoring the data folder: %s", err)
            print(f"warning: ignoring the data folder ({err})")
            self.default_data = ""
        self.images = ImageCache()
        self.packs = PackStore(self.zoo, self.images)

    def data_root(self, text: str | None = None) -> Path | None:
        """The data folder a page's field names, else the app's default; None when neither is set."""
        return data_root_from(text if text is not None else self.default_data)

    def examples(self, modality: str | None = None, data_root: str | None = None, limit: int = 12) -> list[Example]:
        """The user's images when a data folder is set, else the bundled examples of this
        modality (all of them when none fits)."""
        root = self.data_root(data_root)
        if root is not None:
            return data_examples(root, limit)
        bundled = bundled_examples(self.assets)
        return [e for e in bundled if modality is None or e.modality == modality] or bundled
