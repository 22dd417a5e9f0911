"""The workbench's core without gradio: branch CAMs, the image input, readings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mkcnet.workbench  # noqa: F401  (offline environment, as the app sets it)
from mkcnet.analysis.cam import backbone_output_layer, cam_targets
from mkcnet.checkpoint import save_checkpoint
from mkcnet.errors import UserError
from mkcnet.models import build_networks
from mkcnet.workbench.imaging import ImageCache, load_for, prepare
from mkcnet.workbench.reading import analyse, read_out
from mkcnet.workbench.zoo import ModelZoo
from tests.bad_images import BAD_FILES
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> ModelZoo:
    """Two untrained tiny CT-IQAD-style models (1 channel, 32 px)."""
    root = tmp_path_factory.mktemp("zoo")
    for method in ("mkcnet", "vanilla"):
        torch.manual_seed(0)
        config = tiny_config(method)
        task_net, _ = build_networks(config.model)
        save_checkpoint(root / f"tiny-{method}" / "model", task_net, None, config, {"title": method})
    return ModelZoo([root])


@pytest.fixture(scope="module")
def images() -> ImageCache:
    return ImageCache()


@pytest.fixture(scope="module")
def image_file(tiny_dataset) -> Path:
    return next((tiny_dataset / "Images").glob("*.png"))


# ---- CAMs ---------------------------------------------------------------------------------------

def test_cam_targets_follow_the_method(zoo):
    full, vanilla = zoo.model("tiny-mkcnet").task_net, zoo.model("tiny-vanilla").task_net
    assert [t.key for t in cam_targets(full)] == ["diagnosis", "quality", "auxiliary", "fused"]
    assert [t.key for t in cam_targets(vanilla)] == ["fused"]  # the official VanillaNet: no branch, the backbone's map
    assert cam_targets(vanilla)[0].label == "shared backbone"
    assert [t.head for t in cam_targets(full)] == ["diagnosis", "quality", "auxiliary", "diagnosis"]
    # The fused target's layer outputs exactly the shared backbone map.
    seen = {}
    handle = backbone_output_layer(full).register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    with torch.no_grad():
        out = full(torch.zeros(1, 1, 32, 32))
    handle.remove()
    assert torch.equal(seen["map"], out.maps["backbone"])


def test_analyse_gives_probabilities_reading_and_one_overlay_per_branch(zoo, images, image_file):
    model = zoo.model("tiny-mkcnet")
    prepared = load_for(model, str(image_file), images)
    reading, overlays = analyse(model, prepared, "Grad-CAM++", 0.4)
    assert abs(sum(reading.diagnosis.values()) - 1) < 1e-5 and abs(sum(reading.quality.values()) - 1) < 1e-5
    assert list(reading.diagnosis) == ["non-COVID", "COVID-19"] and list(reading.quality) == ["LQ", "HQ"]
    assert [c.split(" → ")[0] for _, c in overlays] == ["diagnosis branch", "quality branch", "auxiliary ω branch",
                                                          "fused diagnosis"]
    assert all(o.shape == (256, 256, 3) and o.dtype == np.uint8 for o, _ in overlays)
    assert read_out(model, prepared).diagnosis == pytest.approx(reading.diagnosis, abs=1e-5)


def test_readings_say_how_far_to_trust_the_diagnosis(zoo, images, image_file):
    from mkcnet.workbench.reading import REASSURANCE, explain

    model = zoo.model("tiny-mkcnet")
    assert model.loaded.calibration is None  # raw softmax: the reading never reassures
    assert "less reliable" in explain(model, np.array([0.9, 0.1]), np.array([0.9, 0.1]))
    assert REASSURANCE not in explain(model, np.array([0.9, 0.1]), np.array([0.1, 0.9]))
    assert "not calibrated" in explain(model, np.array([0.9, 0.1]), np.array([0.1, 0.9]))
    assert explain(model, np.array([0.55, 0.45]), np.array([0.2, 0.8])).startswith("**Uncertain:**")
    assert "no quality head" in explain(zoo.model("tiny-vanilla"), np.array([0.9, 0.1]), None)


# ---- the image input ------------------------------------------------------------------------------

def test_app_predictions_equal_mkcnet_predict(zoo, images, image_file):
    """Without a degradation the app feeds the model exactly what the CLI does."""
    from mkcnet.inference.evaluate import predict_images

    model = zoo.model("tiny-mkcnet")
    table = predict_images(model.loaded, [image_file], device="cpu")
    reading = read_out(model, load_for(model, str(image_file), images))
    assert reading.diagnosis["COVID-19"] == pytest.approx(table["p_diagnosis_COVID-19"].iloc[0], abs=1e-4)


def test_what_if_degrades_with_the_models_modality(zoo, images, image_file):
    model = zoo.model("tiny-mkcnet")
    image = images.read(image_file)
    degraded = prepare(image, model.config.input, "ct", "ct.streak", 4, seed=3)
    assert degraded.record["family"] == "ct.streak" and degraded.record["seed"] == 3
    assert not torch.equal(degraded.tensor, prepare(image, model.config.input, "ct").tensor)
    assert prepare(image, model.config.input, "ct", "ct.streak", 0).record is None
    with pytest.raises(UserError, match="not a ct degradation"):
        prepare(image, model.config.input, "ct", "fundus.blur", 2)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_give_a_clear_error(zoo, images, tmp_path, name):
    data, message = BAD_FILES[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match=message):
        load_for(zoo.model("tiny-mkcnet"), str(tmp_path / name), images)


@pytest.mark.parametrize("kind", ["grey16", "rgba", "rgb_for_grey_model"])
def test_awkward_but_valid_images_are_read(zoo, images, tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "grey16":
        Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16)).save(tmp_path / "x.png")
    else:
        channels = 4 if kind == "rgba" else 3
        Image.fromarray(rng.integers(0, 255, (50, 70, channels), dtype=np.uint8)).save(tmp_path / "x.png")
    prepared = load_for(zoo.model("tiny-mkcnet"), str(tmp_path / "x.png"), images)
    assert prepared.tensor.shape == (1, 1, 32, 32) and prepared.display.shape == (256, 256, 3)


def test_no_file_is_a_user_error(zoo):
    with pytest.raises(UserError, match="upload an image"):
        load_for(zoo.model("tiny-mkcnet"), None, images)


def test_image_cache_is_bounded_in_count_and_bytes(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((100, 100, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    cache = ImageCache(size=3, max_bytes=2 * 100 * 100 * 3)
    for i in range(4):
        assert cache.read(tmp_path / f"{i}.png")[0, 0, 0] == i
    assert [Path(k[0]).name for k in cache._items] == ["2.png", "3.png"]  # the byte bound holds two


def test_auxiliary_classes_are_named_by_the_block_the_mask_gives_them(zoo):
    """The joint mask's own labels say which classes a (diagnosis, quality) pair owns; the
    names must agree with them."""
    from mkcnet.models.meta_learner import mask_labels
    from mkcnet.workbench.reading import auxiliary_class_name

    model = zoo.model("tiny-mkcnet")
    c = model.config
    for d, dname in enumerate(model.class_names("diagnosis")):
        for q, qname in enumerate(model.class_names("quality")):
            labels = mask_labels(c, torch.zeros(1, c.num_auxiliary), torch.tensor([d]), torch.tensor([q]))[0]
            owned = torch.nonzero(labels > 0).flatten().tolist()
            assert len(owned) == c.meta_length
            assert [auxiliary_class_name(model, k) for k in owned] == [
                f"ω sub-class {i + 1} of ({dname}, {qname})" for i in range(c.meta_length)]
