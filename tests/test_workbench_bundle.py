"""The models bundled in checkpoints/: the size budget, cards, packs, and no images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.inference.results import ResultsPack
from mkcnet.workbench.zoo import ModelZoo

REPO = Path(__file__).resolve().parents[1]


def test_bundled_models_fit_the_budget_with_cards_and_packs():
    from mkcnet.data.images import IMAGE_SUFFIXES

    bundled = REPO / "checkpoints"
    names = {p.name for p in bundled.iterdir() if p.is_dir()}
    assert {"synth-fundus-mkcnet", "synth-fundus-vanilla", "ct-iqad-mkcnet", "ct-iqad-vanilla"} <= names
    assert sum(f.stat().st_size for f in bundled.rglob("*") if f.is_file()) <= 40_000_000
    assert not [f for f in bundled.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES]  # paths only, never images
    zoo = ModelZoo([bundled])
    assert zoo.names()[0] == "synth-fundus-mkcnet"  # the default: rank 0
    for name in names:
        folder = bundled / name
        assert (folder / "model.safetensors").stat().st_size < 10_000_000  # no Git LFS needed on Spaces
        card = (folder / "MODEL.md").read_text()
        assert "Validation metrics" in card and "mkcnet train" in card
        pack = ResultsPack.load(folder / "results")
        coords = np.load(folder / "results" / "embeddings.npz")
        assert {f"{m}/{b}" for m in ("tsne", "umap") for b in pack.features} <= set(coords.files)
        assert (folder / "results" / "ood.csv").is_file()
        if name.startswith("synth"):  # every image can be regenerated
            sources = pd.read_csv(folder / "results" / "synth.csv")
            assert set(sources["image"]) == set(pack.predictions["image"])
