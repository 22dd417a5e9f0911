"""The synthetic fundus generator and data set: determinism, labels, balance, split files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mkcnet.degradation import estimate_fov, replay
from mkcnet.synth import DIAGNOSES, QUALITIES, generate_fundus, make_synth_dataset, synth_sample
from mkcnet.synth.dataset import DEFAULT_DIAGNOSIS_RATIOS, DEFAULT_QUALITY_RATIOS


def test_generator_is_deterministic_and_varied() -> None:
    a, rec_a = generate_fundus(seed=1, size=64, diagnosis=2)
    b, rec_b = generate_fundus(seed=1, size=64, diagnosis=2)
    c, _ = generate_fundus(seed=2, size=64, diagnosis=2)
    assert a.tobytes() == b.tobytes() and rec_a == rec_b
    assert not np.array_equal(a, c)
    assert a.shape == (64, 64, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    json.dumps(rec_a)  # JSON-able


def test_image_looks_like_a_fundus_photograph() -> None:
    img, rec = generate_fundus(seed=4, size=128, diagnosis=0)
    fov = estimate_fov(img)
    assert 0.55 < fov.mask.mean() < 0.8  # a disc in a black frame
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    outside = np.hypot(xx - rec["layout"]["cx"], yy - rec["layout"]["cy"]) > rec["layout"]["radius"] + 1
    assert img[outside].max() == 0 and not fov.mask[outside].any()
    r, g, b = (img[fov.mask][:, k].mean() for k in range(3))
    assert r > g > b and r > 0.35  # orange-red
    lay = rec["layout"]
    disc = img[int(lay["disc_y"]), int(lay["disc_x"])].mean()
    fovea = img[int(lay["fovea_y"]), int(lay["fovea_x"])].mean()
    assert disc > fovea  # pale disc, dark fovea
    assert rec["vessels"] > 20


@pytest.mark.parametrize("diagnosis", [0, 1, 2])
def test_lesions_follow_the_diagnosis(diagnosis: int) -> None:
    for seed in range(3):
        _, rec = generate_fundus(seed=seed, size=64, diagnosis=diagnosis)
        les = rec["lesions"]
        if diagnosis == 0:
            assert les == {"grade": "none"}
        else:
            assert les["microaneurysms"] > 0
        if diagnosis == 2:
            assert les["grade"] == "proliferative" and les["new_vessel_fronds"] > 0


@pytest.mark.parametrize("quality", [0, 1, 2])
def test_quality_comes_from_recorded_degradations(quality: int) -> None:
    for seed in range(4):
        img, rec = synth_sample(seed=seed, size=64, diagnosis=1, quality=quality)
        deg = rec["degradation"]
        if quality == 2:
            assert deg is None or deg["severity"] == 1
        elif quality == 1:
            assert deg["severity"] in (2, 3)
        else:
            assert deg["severity"] >= 3
        clean = np.rint(generate_fundus(seed, 64, 1)[0] * 255).astype(np.uint8)
        if deg is not None:  # the clean image regenerated from its seed + the record = the same bytes
            assert replay(clean, deg).tobytes() == img.tobytes()


def test_dataset_labels_balance_and_splits(tmp_path) -> None:
    n = 40
    summary = make_synth_dataset(tmp_path / "ds", n=n, size=48, seed=3, workers=1)
    root = tmp_path / "ds"
    frames = {s: pd.read_csv(root / f"{s}.csv") for s in ("train", "val", "test")}
    for frame in frames.values():
        assert list(frame.columns) == ["image", "diagnosis", "quality"]
    allrows = pd.concat(frames.values())
    assert len(allrows) == n and allrows["image"].is_unique
    assert np.bincount(allrows["diagnosis"], minlength=3).tolist() == [16, 14, 10]
    expected_q = [round(r * n) for r in DEFAULT_QUALITY_RATIOS]
    assert abs(np.bincount(allrows["quality"], minlength=3) - expected_q).max() <= 2
    assert sorted(allrows["diagnosis"].unique()) == [0, 1, 2] and set(allrows["quality"]) <= {0, 1, 2}
    assert 0.6 <= len(frames["train"]) / n <= 0.8 and set(frames["train"]["diagnosis"]) == {0, 1, 2}
    lines = (root / "generation.jsonl").read_text().splitlines()
    records = {r["image"]: r for r in map(json.loads, lines)}
    assert set(records) == set(allrows["image"])
    for row in allrows.itertuples():
        rec = records[row.image]
        assert (rec["diagnosis"], rec["quality"]) == (row.diagnosis, row.quality)
        with Image.open(root / row.image) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
    meta = json.loads((root / "meta.json").read_text())
    assert meta["classes"] == {"diagnosis": list(DIAGNOSES), "quality": list(QUALITIES)}
    assert summary["n"] == n and sum(DEFAULT_DIAGNOSIS_RATIOS) == pytest.approx(1)


def test_dataset_is_reproducible_whatever_the_workers(tmp_path) -> None:
    make_synth_dataset(tmp_path / "a", n=10, size=40, seed=9, workers=1)
    make_synth_dataset(tmp_path / "b", n=10, size=40, seed=9, workers=2)
    for name in ("train.csv", "val.csv", "test.csv", "images/synth_00007.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cli_synth_and_its_errors(tmp_path, capsys) -> None:
    from mkcnet.cli import main

    out = tmp_path / "s"
    assert main(["synth", str(out), "--n", "6", "--size", "40", "--workers", "1"]) == 0
    assert (out / "train.csv").is_file()
    assert main(["synth", str(out), "--n", "6", "--size", "40"]) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "t"), "--quality-ratios", "1,2"]) == 2


def test_hard_cases_are_usable_images_with_confounders() -> None:
    seen = set()
    for seed in range(40):
        diagnosis, quality = seed % 2, 1 if seed % 3 else 0
        _, rec = synth_sample(seed=seed, size=32, diagnosis=diagnosis, quality=quality)
        if rec["hard_case"]:
            seen.add(rec["hard_case"])
            assert quality == 1
            kinds = {s["type"] for s in rec["degradation"]["params"].get("steps", [])} or {
                rec["degradation"]["family"].split(".")[1]}
            assert ("spots" in kinds) if diagnosis == 0 else bool(kinds & {"blur", "light", "hole"})
    assert seen == {"artifact_mimics_lesion", "lesion_hidden_by_blur_or_light"}
