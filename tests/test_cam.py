"""Per-branch CAMs (mkcnet.analysis.cam) against pytorch-grad-cam itself, on maps large enough
(8×8) that every method gives a non-trivial map; batches; and `mkcnet cam`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mkcnet.analysis.cam import CAM_METHODS, HeadLogits, cam_class, cam_targets, compute_cams
from mkcnet.checkpoint import save_checkpoint
from mkcnet.data.dataset import normalise
from mkcnet.models import build_networks
from tests.conftest import make_image, tiny_config

pytest.importorskip("pytorch_grad_cam")
SIZE = 64


@pytest.fixture(scope="module")
def model():
    """A tiny MKCNet whose backbone map is 8×8 (64 px input, output stride 8), trained a few
    steps on the blob task so that its maps mean something (an untrained net's Grad-CAM is
    often zero everywhere, which any implementation would match)."""
    torch.manual_seed(0)
    config = tiny_config("mkcnet", image_size=SIZE, output_stride=8)
    task_net, _ = build_networks(config.model)
    rng = np.random.default_rng(0)
    labels = [(d, q) for d in (0, 1) for q in (0, 1)] * 4
    x = normalise(torch.from_numpy(np.stack([make_image(d, q, rng, size=SIZE)[None] for d, q in labels])),
                  config.model.input)
    y = torch.tensor(labels)
    optimiser = torch.optim.SGD(task_net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        out = task_net(x)
        loss = (torch.nn.functional.cross_entropy(out.logits("diagnosis"), y[:, 0])
                + torch.nn.functional.cross_entropy(out.logits("quality"), y[:, 1])
                + out.logits("auxiliary").logsumexp(1).mean())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return config, task_net.eval()


@pytest.fixture(scope="module")
def batch(model) -> torch.Tensor:
    config, _ = model
    rng = np.random.default_rng(0)
    images = np.stack([make_image(d, q, rng, size=SIZE)[None] for d, q in ((0, 1), (1, 0), (1, 1))])
    return normalise(torch.from_numpy(images), config.model.input)


def test_the_maps_are_large_enough_to_tell_methods_apart(model, batch):
    _, task_net = model
    with torch.no_grad():
        out = task_net(batch)
    assert out.maps["backbone"].shape[-2:] == (8, 8)


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_one_pass_cams_equal_pytorch_grad_cam(model, batch, method):
    """compute_cams' single forward gives the library's own per-branch maps, image by image."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    _, task_net = model
    cams = compute_cams(task_net, batch, method)
    for target in cam_targets(task_net):
        classes = cams.categories[target.head]
        with cam_class(method)(model=HeadLogits(task_net, target.head), target_layers=[target.layer]) as cam:
            expected = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in classes])
        # Non-trivial first: a map of zeros would agree with any implementation.
        assert (expected.max(axis=(1, 2)) - expected.min(axis=(1, 2)) > 0.5).all(), (method, target.key)
        assert np.unique(expected.round(3)).size > 8, (method, target.key)
        np.testing.assert_allclose(cams.maps[target.key], expected, atol=1e-5, err_msg=f"{method} {target.key}")


def test_a_batch_gives_each_image_its_own_maps(model, batch):
    _, task_net = model
    together = compute_cams(task_net, batch, "Grad-CAM")
    for i in range(len(batch)):
        alone = compute_cams(task_net, batch[i:i + 1], "Grad-CAM")
        for key, maps in together.maps.items():
            np.testing.assert_allclose(maps[i], alone.maps[key][0], atol=1e-5)
    assert not np.allclose(together.maps["diagnosis"][0], together.maps["diagnosis"][1])


def test_a_chosen_class_is_explained(model, batch):
    _, task_net = model
    top = compute_cams(task_net, batch, "Grad-CAM").categories["diagnosis"]
    other = compute_cams(task_net, batch, "Grad-CAM", categories={"diagnosis": 1 - top})
    assert (other.categories["diagnosis"] == 1 - top).all()
    assert not np.allclose(other.maps["diagnosis"], compute_cams(task_net, batch, "Grad-CAM").maps["diagnosis"])


def test_cams_leave_no_hooks_behind(model, batch):
    _, task_net = model
    compute_cams(task_net, batch, "HiResCAM")
    assert all(not m._forward_hooks for m in task_net.modules())


def test_the_cam_command_writes_every_branch_as_png_and_npy(model, tmp_path, capsys):
    from mkcnet.cli import main

    config, task_net = model
    save_checkpoint(tmp_path / "run" / "best", task_net, None, config, {"epoch": 1})
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(make_image(1, 1, rng, size=80)).save(images / name)
    (images / "broken.png").write_bytes(b"not an image")
    assert main(["cam", str(tmp_path / "run"), str(images), "--out", str(tmp_path / "cams")]) == 0
    out = capsys.readouterr()
    assert "skipped broken.png" in out.err and "wrote 8 maps" in out.out
    index = pd.read_csv(tmp_path / "cams" / "cams.csv")
    assert sorted(set(index["target"])) == ["auxiliary", "diagnosis", "fused", "quality"] and len(index) == 8
    raw = np.load(tmp_path / "cams" / "a.diagnosis.npy")
    assert raw.shape == (SIZE, SIZE) and raw.dtype == np.float32 and 0 <= raw.min() and raw.max() <= 1
    assert Image.open(tmp_path / "cams" / "b.fused.png").size == (256, 256)
    assert main(["cam", str(tmp_path / "run"), str(images / "broken.png"), "--out", str(tmp_path / "x")]) == 2


def test_the_diagnosis_map_points_at_the_evidence(tmp_path):
    """Semantics, not only agreement with the library: a model trained briefly on "a bright blob
    is present (on the left or the right) or not" puts its diagnosis map's mass for "present"
    on the blob's side (measured: 95 % of the images for Grad-CAM and HiResCAM; a map flipped
    or taken from the wrong layer lands at ~50 %). EigenCAM is class-agnostic, so not asked."""
    from mkcnet.data.dataset import ImageSet, SplitTable
    from mkcnet.training.trainer import Trainer

    rng = np.random.default_rng(0)

    def blobs(n: int):
        present, side = rng.integers(0, 2, n), rng.integers(0, 2, n)
        y, x = np.mgrid[0:32, 0:32] / 32
        images = []
        for p, s in zip(present, side):
            image = 0.2 + rng.normal(0, 0.05, (32, 32))
            if p:
                image = image + 0.6 * np.exp(-((x - (0.25 if s == 0 else 0.75)) ** 2 + (y - 0.5) ** 2) / 0.01)
            images.append((image.clip(0, 1) * 255).astype(np.uint8)[None])
        return present, side, torch.from_numpy(np.stack(images))

    torch.manual_seed(0)
    config = tiny_config("vanilla-gab", output_stride=8)  # a diagnosis branch whose map is asked
    config.train.epochs, config.train.step_size, config.train.grad_probe = 4, 4, False
    config.train.lr = 0.03
    present, _, images = blobs(64)
    train = ImageSet(SplitTable(None, [str(i) for i in range(64)], present, rng.integers(0, 2, 64)), images,
                     config.model.input)
    trainer = Trainer(config, tmp_path / "run", progress=False, verbose=False)
    trainer.fit(train)
    present, side, images = blobs(40)
    x = normalise(images, config.model.input)
    for method in ("Grad-CAM", "HiResCAM"):
        maps = compute_cams(trainer.task_net.eval(), x, method, categories={"diagnosis": 1}).maps["diagnosis"]
        left, right = maps[..., :16].sum((1, 2)), maps[..., 16:].sum((1, 2))
        shown = present == 1
        on_side = np.where(side[shown] == 0, left[shown] > right[shown], right[shown] > left[shown])
        assert on_side.mean() >= 0.85, (method, on_side.mean())
