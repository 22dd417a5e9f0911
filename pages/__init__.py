"""The workbench's pages, one module each. Every module has `TITLE` and
`build(context, root=None) -> gr.Blocks`: called by app.py with the app's Blocks as `root` it
renders into the current route; called on its own it gives a standalone Blocks (that is how the
tests build each page)."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from pages import compare, diagnose, embeddings, ood


@dataclass(frozen=True)
class Page:
    module: ModuleType
    path: str  # URL path; the first page is the app's home

    @property
    def title(self) -> str:
        return self.module.TITLE


PAGES = (Page(diagnose, ""), Page(embeddings, "embeddings"), Page(ood, "ood"), Page(compare, "compare"))
