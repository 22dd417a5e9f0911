"""The models bundled in checkpoints/: Hugging Face's layout, the size budget, cards, packs, and no images."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mkcnet.inference.results import ResultsPack
from mkcnet.workbench.zoo import ModelZoo

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("synth-fundus-mkcnet", "synth-fundus-vanilla", "ct-iqad-mkcnet", "ct-iqad-vanilla")


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundle_is_a_hugging_face_model_folder(name, monkeypatch):
    """model.safetensors, config.json (the header's JSON) and a README.md whose YAML the Hub parses:
    library mkcnet, and a model-index whose AUCs are the header's `info.metrics` and whose ECE is its
    calibration's; `mkcnet.load(name)` reads the folder through `from_pretrained`, without the network."""
    from huggingface_hub import ModelCard

    import mkcnet
    from mkcnet.checkpoint import read_header
    from mkcnet.hub import ECE, METRICS

    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    folder = REPO / "checkpoints" / name
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md", "results"}
    header = read_header(folder / "model.safetensors")
    assert json.loads((folder / "config.json").read_text()) == header
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "mkcnet" and card.data.license == "mit" and card.data.model_name == name
    assert card.data.datasets == [header["info"]["dataset"]] and header["info"]["method"] in card.data.tags
    assert "Validation metrics" in card.text and not card.text.lstrip().startswith("---")
    metrics = header["info"]["metrics"]
    expected = {shown: metrics[key] for key, _, shown in METRICS if key in metrics}
    expected[ECE[2]] = header["calibration"]["scores"][ECE[0]]
    assert {"AUC (all)", "AUC (HQ)", "AUC (LQ)"} <= set(expected)
    got = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert got == expected
    assert {r.dataset_split for r in card.data.eval_results} == {header["info"]["split"]}

    calls = []
    through = mkcnet.Model._from_pretrained.__func__

    def spy(cls, **kwargs):
        calls.append(Path(kwargs["model_id"]).resolve())
        return through(cls, **kwargs)

    monkeypatch.setattr(mkcnet.Model, "_from_pretrained", classmethod(spy))
    model = mkcnet.load(name)
    assert calls == [folder.resolve()] and model.name == name and model.loaded.info == header["info"]


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
        card = zoo.entry(name).card_markdown()  # README.md as the workbench shows it: no hub metadata
        assert card.startswith("# ") and "Validation metrics" in card and "mkcnet train" in card
        pack = ResultsPack.load(folder / "results")
        coords = np.load(folder / "results" / "embeddings.npz")
        assert {f"{m}/{b}" for m in ("tsne", "umap") for b in pack.features} <= set(coords.files)
        assert (folder / "results" / "ood.csv").is_file()
        if name.startswith("synth"):  # every image can be regenerated
            sources = pd.read_csv(folder / "results" / "synth.csv")
            assert set(sources["image"]) == set(pack.predictions["image"])


def test_the_card_reliability_tables_recount_the_packs():
    """Each bundled card's reliability rows (raw and calibrated) against a recount from its own
    pack: the calibrated rows from the probabilities in predictions.csv, the raw ones from the
    logits those imply under the card's temperature."""
    from mkcnet.trust.calibration import softmax

    for name in ("ct-iqad-mkcnet", "ct-iqad-vanilla", "synth-fundus-mkcnet", "synth-fundus-vanilla"):
        folder = REPO / "checkpoints" / name
        info = json.loads((folder / "config.json").read_text())["info"]
        table = pd.read_csv(folder / "results" / "predictions.csv")
        calibrated = table.filter(regex=r"^prob_diagnosis_").to_numpy(np.float64)
        t = info["calibration"]["temperatures"]["diagnosis"]
        for kind, probs in (("calibrated", calibrated), ("raw", softmax(np.log(calibrated) * t))):
            rows = info["reliability"][kind]
            assert len(rows) >= 3 and sum(r["n"] for r in rows) == len(table)  # more than one band to get wrong
            confidence, right = probs.max(1), probs.argmax(1) == table["diagnosis"].to_numpy()
            for r in rows:
                inside = (confidence >= r["low"] - 1e-6) & ((confidence < r["high"] - 1e-6) | (r["high"] == 1.0))
                assert r["n"] == inside.sum(), (name, kind, r)
                assert r["accuracy"] == pytest.approx(right[inside].mean(), abs=1e-9)
                assert r["confidence"] == pytest.approx(confidence[inside].mean(), abs=1e-3)  # fp32 csv
        card = (folder / "README.md").read_text()
        assert all(f"| {r['low']:.0%}-{r['high']:.0%} |" in card for r in info["reliability"]["calibrated"])


def test_the_ct_models_flag_a_chest_xray_by_its_features(tmp_path):
    """A drawn chest radiograph passes the CT models' input checks (grey, square) and is flagged by
    the feature score alone; 500 real pediatric X-rays: docs/ood_guard.csv."""
    from PIL import Image

    from mkcnet.checkpoint import load_checkpoint
    from mkcnet.inference.evaluate import predict_images
    from tests.drawn_xray import drawn_chest_xray

    path = tmp_path / "xray.png"
    Image.fromarray(drawn_chest_xray()).save(path)
    for name in ("ct-iqad-mkcnet", "ct-iqad-vanilla"):
        row = predict_images(load_checkpoint(REPO / "checkpoints" / name), [path], device="cpu").iloc[0]
        assert bool(row["ood"]) and row["ood_score"] > 1.2 and "features are far" in row["ood_reason"], name


def test_the_first_screen_opens_on_an_example_the_default_model_reads_correctly():
    """A newcomer's first look: the default model's reading of the first example agrees with the
    example's label, on both heads, and the guard lets it through."""
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.imaging import load_for
    from mkcnet.workbench.reading import read_out

    context = Workbench()
    name = context.zoo.choices(None)[0][1]
    model = context.zoo.model(name)
    example = context.examples(context.zoo.entry(name).modality)[0]
    assert example.diagnosis is not None and example.quality is not None  # labelled, so the page can say so
    reading = read_out(model, load_for(model, context.stage(example.path), context.images))
    assert (reading.top_diagnosis, reading.top_quality) == (example.diagnosis, example.quality)
    assert reading.calibrated and not reading.verdict.ood


@pytest.mark.parametrize("rgb, expected", [(False, "ct-iqad-mkcnet"), (True, "synth-fundus-mkcnet")])
def test_evaluate_on_your_data_defaults_to_a_model_that_fits_it(tmp_path, rgb, expected):
    """Embeddings: once a visitor brings a data set, the model to evaluate becomes the first one
    whose input checks their images pass (greyscale images → a CT model, colour → fundus)."""
    from mkcnet.workbench.context import Workbench
    from pages.embeddings import EmbeddingEvents
    from tests.conftest import write_dataset

    context = Workbench(ModelZoo([REPO / "checkpoints"]), data_root="")
    context.session().use_folder(write_dataset(tmp_path / "data", rgb=rgb))
    assert EmbeddingEvents(context).fitting_model(None)["value"] == expected


def test_the_plain_view_says_the_same_verdicts_without_the_models_internals():
    """A clinician's plain view of a bundled model's reading: the same diagnosis, confidence and
    set as the expert's, the validation record as "right on k of n similar images", and no ω map,
    CAM theory, threshold, validation AUC, command or calibration jargon; a flagged image's plain
    reading says not to use it without the guard's numbers."""
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.imaging import load_for
    from mkcnet.workbench.reading import OUT_OF_DISTRIBUTION, analyse, explain, explain_maps
    context = Workbench(ModelZoo([REPO / "checkpoints"]), data_root="")
    model = context.zoo.model("synth-fundus-mkcnet")
    example = context.examples("fundus")[0]
    prepared = load_for(model, context.stage(example.path), context.images)
    expert, expert_maps = analyse(model, prepared, plain=False)
    plain, plain_maps = analyse(model, prepared, plain=True)
    assert expert.diagnosis == plain.diagnosis and expert.diagnosis_set == plain.diagnosis_set
    band = model.loaded.calibration.band(plain.top_quality, max(plain.diagnosis.values()))
    assert f"right on {band.correct} of {band.n} similar validation images" in plain.text
    assert f"({band.correct} of {band.n})" in expert.text  # the same record, the expert's way
    words = ("calibrated", "validation AUC", "mkcnet", "ω", "threshold", "softmax", "head", "guarantee")
    assert [w for w in words if w in expert.text + explain_maps(model)] and not [
        w for w in words if w in plain.text + explain_maps(model, plain=True)]
    assert [c.split(" → ")[0] for _, c in expert_maps] == ["diagnosis branch", "quality branch", "auxiliary ω branch",
                                                            "fused diagnosis"]
    assert [c.split(" → ")[0] for _, c in plain_maps] == ["diagnosis branch", "quality branch", "fused diagnosis"]
    assert np.array_equal(plain_maps[2][0], expert_maps[3][0])  # the same fused map, only fewer shown

    from mkcnet.trust.guard import Verdict

    ood = Verdict(True, 9.0, "features are far from the training data (9.0× the validation threshold)")
    d, q = np.array([0.1, 0.2, 0.7]), np.array([0.1, 0.1, 0.8])
    assert OUT_OF_DISTRIBUTION in explain(model, d, q, ood, plain=True)
    assert "threshold" not in explain(model, d, q, ood, plain=True) and "threshold" in explain(model, d, q, ood)
