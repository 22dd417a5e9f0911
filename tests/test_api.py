"""The Python front door: `mkcnet.load`, `Model.predict/cams/features`, the README's example,
and the Hugging Face round trip (save_pretrained → from_pretrained, the card's metadata, no network)."""

from __future__ import annotations

import doctest
import importlib
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mkcnet
from mkcnet.errors import UserError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "assets" / "examples"
FUNDUS = sorted(EXAMPLES.glob("synth_*.png"))


@pytest.fixture(scope="module")
def fundus() -> mkcnet.Model:
    return mkcnet.load("synth-fundus-mkcnet")


def readme_python_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_prints_a_diagnosis():
    """The README's block, run as a user would run it from a clone."""
    result = subprocess.run([sys.executable, "-c", readme_python_block()], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"(NoDR|NPDR|PDR) \d+% (in|out of) distribution\n", result.stdout), result.stdout


def test_import_mkcnet_stays_light_and_load_resolves_bundled_names_from_anywhere(tmp_path):
    """`import mkcnet` loads no torch; a bundled name resolves from a folder outside the clone."""
    # …and predicting (the API, then `mkcnet predict` on torch) needs no scikit-learn and no plotting.
    code = ("import sys, mkcnet\nlight = not {'torch', 'timm'} & set(sys.modules)\n"
            "model = mkcnet.load('ct-iqad-mkcnet')\nmodel.predict(sys.argv[1])\n"
            "from mkcnet.cli import main\nassert main(['predict', sys.argv[2], sys.argv[1]]) == 0\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'plotly', 'matplotlib', 'umap'})\n"
            "print(light, model.name, model.diagnosis_names, heavy)")
    image, checkpoint = EXAMPLES / "phantom_ct.dcm", REPO / "checkpoints" / "ct-iqad-mkcnet"
    result = subprocess.run([sys.executable, "-c", code, str(image), str(checkpoint)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True ct-iqad-mkcnet ('non-COVID', 'COVID-19') []"


def test_predict_agrees_with_mkcnet_predict(fundus):
    """The API and the CLI's `predict_images` give the same calibrated probabilities and verdicts."""
    from mkcnet.inference.evaluate import SET_SEPARATOR, predict_images

    files = [*FUNDUS, EXAMPLES / "retina.jpg", REPO / "missing.png"]
    assessments = fundus.predict(files)
    table = predict_images(fundus.loaded, files, device="cpu")
    assert [a.source for a in assessments] == table["image"].tolist()
    for a, (_, row) in zip(assessments, table.iterrows()):
        assert bool(a.error) == bool(row["error"])
        if a.error:
            assert a.diagnosis_probabilities == {} and np.isnan(a.confidence)
            continue
        assert a.calibrated and a.diagnosis == row["diagnosis"] and a.quality == row["quality"]
        for name, p in a.diagnosis_probabilities.items():
            assert abs(p - row[f"p_diagnosis_{name}"]) <= 1e-4
        assert a.ood == row["ood"] and abs(a.ood_score - row["ood_score"]) <= 1e-3
        assert a.diagnosis_raw != a.diagnosis_probabilities  # calibrated ≠ raw softmax
        assert a.diagnosis_set == tuple(row["diagnosis_set"].split(SET_SEPARATOR))  # the fundus bundles carry sets
        assert a.referral == ("refer" if a.ood or len(a.diagnosis_set) > 1 else "diagnose")
        json.dumps(a.to_dict())  # plain JSON


def test_prediction_sets_and_referral_agree_with_mkcnet_predict():
    """A checkpoint with prediction sets (the bundled CT MKCNet): each assessment's set is the CLI's
    `diagnosis_set`, and the advice is "refer" exactly for flagged images and sets of 2+ classes."""
    from mkcnet.inference.evaluate import SET_SEPARATOR, predict_images

    model = mkcnet.load("ct-iqad-mkcnet")
    assert model.loaded.prediction_sets is not None
    files = [EXAMPLES / "phantom_ct.dcm", EXAMPLES / "phantom_gaussian_noise3.png", EXAMPLES / "phantom_streak4.tif",
             *FUNDUS[:1]]
    table = predict_images(model.loaded, files, device="cpu")
    sizes = []
    for a, (_, row) in zip(model.predict(files), table.iterrows()):
        assert a.diagnosis_set == tuple(row["diagnosis_set"].split(SET_SEPARATOR)) and a.diagnosis in a.diagnosis_set
        assert a.set_coverage == model.loaded.prediction_sets.coverage
        assert a.referral == ("refer" if a.ood or len(a.diagnosis_set) > 1 else "diagnose")
        sizes.append(len(a.diagnosis_set))
    assert set(sizes) <= {1, 2}


def test_features_and_cams(fundus):
    features = fundus.features(FUNDUS[:2])
    assert {"diagnosis", "quality", "auxiliary", "fused", "backbone"} <= set(features)
    assert all(v.shape[0] == 2 for v in features.values())
    maps = fundus.cams(FUNDUS[0], method="HiResCAM")
    assert set(maps) == {"diagnosis", "quality", "auxiliary", "fused"}
    assert all(m.shape == (128, 128) and 0 <= m.min() and m.max() <= 1 for m in maps.values())
    with pytest.raises(UserError, match="unknown CAM method"):
        fundus.cams(FUNDUS[0], method="Magic-CAM")


def test_unknown_names_and_offline_hub_ids_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no model 'nope'.*synth-fundus-mkcnet"):
        mkcnet.load("nope")
    with pytest.raises(UserError, match="offline"):
        mkcnet.load("someone/not-cached-mkcnet")


def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_save_pretrained_round_trip_is_bit_identical_and_its_card_is_hub_metadata(fundus, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    no_network(monkeypatch)  # neither saving nor loading a local folder may touch the network
    folder = tmp_path / "my-model"
    fundus.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    again = mkcnet.Model.from_pretrained(folder)
    assert again.name == "my-model" and mkcnet.load(folder).name == "my-model"
    import torch

    from mkcnet.data.images import read_image

    x = torch.cat([fundus.tensor(read_image(f)) for f in FUNDUS])
    with torch.no_grad():
        a, b = fundus.loaded.task_net(x), again.loaded.task_net(x)
    for head in ("diagnosis", "quality", "auxiliary"):
        assert torch.equal(a.logits(head), b.logits(head))
    assert torch.equal(a.features["backbone"], b.features["backbone"])
    assert again.loaded.prediction_sets is not None  # the sets travel with the weights, as the guard does
    assert [x.to_dict() for x in fundus.predict(FUNDUS)] == [x.to_dict() for x in again.predict(FUNDUS)]

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "mkcnet" and card.data.license == "mit"
    assert {"mkcnet", "medical-imaging", "synth-fundus"} <= set(card.data.tags)
    assert card.data.datasets == ["synth-fundus"]
    # The model-index metrics are evaluate's: the bundled results pack's metrics and calibration.
    pack = json.loads((REPO / "checkpoints" / "synth-fundus-mkcnet" / "results" / "pack.json").read_text())
    got = {r.metric_name: r.metric_value for r in card.data.eval_results}
    expected = {"AUC (all)": "diagnosis.auc", "AUC (HQ)": "diagnosis.HQ.auc", "AUC (LQ)": "diagnosis.LQ.auc"}
    for shown, key in expected.items():
        assert got[shown] == pytest.approx(pack["metrics"][key], abs=1e-12)
    assert got["ECE (diagnosis, calibrated)"] == pytest.approx(pack["calibration"]["diagnosis.after.ECE"], abs=1e-12)
    assert "Validation metrics" in card.text  # the bundle's own card text under the metadata


def test_the_new_modules_doctests_pass(monkeypatch):
    monkeypatch.chdir(REPO)  # the examples name the bundled assets relative to a clone
    for name in ("mkcnet.api", "mkcnet.hub", "mkcnet.checkpoint", "mkcnet.inference.assessment"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, name


def test_a_bundled_model_name_resolves_wherever_a_checkpoint_is_asked_for(tmp_path, monkeypatch):
    """`mkcnet predict ct-iqad-mkcnet x.png` from any folder: a bare name that is no file is looked
    up among the bundled models; an unknown one is one line naming the bundled ones."""
    from mkcnet.checkpoint import resolve_checkpoint
    from mkcnet.errors import UserError
    from mkcnet.project import project_path

    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("synth-fundus-mkcnet").parent == project_path("checkpoints", "synth-fundus-mkcnet")
    with pytest.raises(UserError, match=r"nosuch .*bundled: .*synth-fundus-mkcnet"):
        resolve_checkpoint("nosuch")
    (tmp_path / "synth-fundus-mkcnet").mkdir()  # a folder of that name here is what the user means
    with pytest.raises(UserError, match="no checkpoint"):
        resolve_checkpoint("synth-fundus-mkcnet")
