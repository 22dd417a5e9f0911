"""Shared fixtures: a tiny generated data set in the split format, and an isolated cache."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
import torch
from PIL import Image

from mkcnet.config import RunConfig
from mkcnet.presets import build_run_config


@contextlib.contextmanager
def single_thread():
    """Tiny tensors train ~5x faster on one intra-op thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session", autouse=True)
def _tests_use_one_thread():
    """Every test uses tiny tensors: one intra-op thread is faster and steadier on 2 cores."""
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MKCNET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def make_image(diagnosis: int, quality: int, rng: np.random.Generator, size: int = 40, rgb: bool = False) -> np.ndarray:
    """A learnable toy: diagnosis = a bright blob on the left or right, quality = noise level."""
    y, x = np.mgrid[0:size, 0:size] / size
    cx = 0.3 if diagnosis == 0 else 0.7
    image = 0.2 + 0.6 * np.exp(-((x - cx) ** 2 + (y - 0.5) ** 2) / 0.02)
    image = image + rng.normal(0, 0.05 if quality == 1 else 0.25, image.shape)
    image = (image.clip(0, 1) * 255).astype(np.uint8)
    return np.stack([image, image // 2, image // 3], -1) if rgb else image


def write_dataset(root: Path, n_per_cell: int = 4, rgb: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "val": []}
    for d in (0, 1):
        for q in (0, 1):
            for i in range(n_per_cell):
                split = "val" if i == 0 else "train"
                # Names with % , spaces and parentheses, as in CT-IQAD and DRIMDB.
                name = f"Images/img {d}{q}%{i} (copy).png"
                Image.fromarray(make_image(d, q, rng, rgb=rgb)).save(root / name)
                rows[split].append(f"{name},{d},{q}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("image,diagnosis,quality\n" + "\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny") / "data")


def tiny_config(method: str = "mkcnet", channels: int = 1, backbone: str = "resnet10t", image_size: int = 32,
                output_stride: int | None = None, **overrides) -> RunConfig:
    config = build_run_config("ct-iqad", "cpu", method, backbone=backbone, meta_backbone="resnet10t",
                              image_size=image_size, in_chans=channels, mean=(0.5,) * channels,
                              std=(0.25,) * channels, feature_dim=32, batch_size=8, epochs=1, meta_every=1,
                              output_stride=output_stride, **overrides)
    return config
