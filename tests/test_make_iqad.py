"""make-iqad: splits stratified by diagnosis, quality by ratio, a replayable record per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mkcnet.cli import main
from mkcnet.degradation import replay
from mkcnet.degradation.iqad import load_image, make_iqad
from mkcnet.errors import UserError

N_PER_CLASS = 16
ODD_NAMES = ["scan 50%{}.png", "IM-(copy {}).jpeg", "plain_{}.png"]


def _write_images(root: Path, n_per_class: int = N_PER_CLASS) -> Path:
    """A tiny labelled set: grey 40x32 images (and a few RGB), awkward file names, labels.csv."""
    rng = np.random.default_rng(0)
    (root / "Images").mkdir(parents=True)
    rows = []
    for d in (0, 1):
        for i in range(n_per_class):
            name = ODD_NAMES[i % 3].format(f"{d}-{i}")
            img = (rng.random((32, 40)) * 200 + 20).astype(np.uint8)
            pil = Image.fromarray(img) if i % 4 else Image.fromarray(np.stack([img] * 3, -1))
            pil.save(root / "Images" / name)
            rows.append((f"Images/{name}", d, "x"))
    pd.DataFrame(rows, columns=["image", "diagnosis", "subtype"]).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    return _write_images(tmp_path / "src")


def _read_splits(root: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(root / f"{s}.csv") for s in ("train", "val", "test")}


def test_writes_stratified_splits_with_a_record_per_image(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "iqad"
    summary = make_iqad(source, out, "xray", size=24, seed=1, workers=1)
    splits = _read_splits(out)
    for frame in splits.values():
        assert list(frame.columns) == ["image", "diagnosis", "quality"]
    rows = pd.concat(splits.values())
    assert len(rows) == 2 * N_PER_CLASS and rows["image"].is_unique and summary["n"] == len(rows)
    for d in (0, 1):  # quality ratios 0.25/0.25/0.5 hold within each diagnosis
        assert np.bincount(rows[rows["diagnosis"] == d]["quality"], minlength=3).tolist() == [4, 4, 8]
    for frame in splits.values():  # every split has both diagnoses, in equal numbers
        counts = np.bincount(frame["diagnosis"], minlength=2)
        assert counts[0] == counts[1] > 0
    records = {r["image"]: r for r in map(json.loads, (out / "degradations.jsonl").read_text().splitlines())}
    assert set(records) == set(rows["image"])
    src_root = source.parent
    for row in rows.itertuples():
        rec = records[row.image]
        assert rec["quality"] == row.quality and rec["diagnosis"] == row.diagnosis
        with Image.open(out / row.image) as im:
            written = np.asarray(im)
            assert max(im.size) == 24 and im.mode == "L"  # X-rays are stored grey, RGB copies too
        deg = rec["degradation"]
        if row.quality == 2:
            assert deg is None
            continue
        assert deg["family"].startswith("xray.")
        assert deg["severity"] in ((3, 4, 5) if row.quality == 0 else (1, 2))
        clean = load_image(str(src_root / rec["source"]), 24, grey=True)  # as the builder loaded it
        assert np.array_equal(np.asarray(replay(clean, deg)), written)


def test_same_seed_same_data_set(source: Path, tmp_path: Path) -> None:
    make_iqad(source, tmp_path / "a", "ct", scheme="binary", size=20, seed=4, workers=1)
    make_iqad(source, tmp_path / "b", "ct", scheme="binary", size=20, seed=4, workers=2)
    for name in ("train.csv", "val.csv", "test.csv", "degradations.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rows = pd.concat(_read_splits(tmp_path / "a").values())
    assert set(rows["quality"]) == {0, 1}
    for img in rows["image"]:
        assert (tmp_path / "a" / img).read_bytes() == (tmp_path / "b" / img).read_bytes()
    assert any("%" in img or " " in img for img in rows["image"])


def test_class_folders_and_custom_levels(tmp_path: Path) -> None:
    for cls in ("normal", "pneumonia"):
        (tmp_path / "folders" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((16, 16), 40 * i + 20, np.uint8)).save(tmp_path / "folders" / cls / f"{i}.png")
    out = tmp_path / "o"
    assert main(["make-iqad", str(tmp_path / "folders"), str(out), "--modality", "xray",
                 "--families", "xray.jpeg,xray.gamma", "--severities", "4-5,0", "--scheme", "binary",
                 "--workers", "1"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["diagnosis_names"] == {"normal": 0, "pneumonia": 1}
    recs = [json.loads(line) for line in (out / "degradations.jsonl").read_text().splitlines()]
    assert {r["degradation"]["family"] for r in recs if r["degradation"]} <= {"xray.jpeg", "xray.gamma"}
    assert all(r["degradation"]["severity"] >= 4 for r in recs if r["quality"] == 0)


def test_user_errors(source: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match="does not exist"):
        make_iqad(tmp_path / "nope", tmp_path / "o1", "xray")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,label\na.png,0\n")
    with pytest.raises(UserError, match="needs columns image,diagnosis"):
        make_iqad(bad_csv, tmp_path / "o2", "xray")
    broken = source.parent / "Images" / "plain_0-2.png"
    broken.write_text("not an image")
    with pytest.raises(UserError, match="cannot read image"):
        make_iqad(source, tmp_path / "o3", "xray", workers=1)
    with pytest.raises(UserError, match="unknown degradation family"):
        make_iqad(source, tmp_path / "o4", "xray", families=["xray.nope"])
    assert main(["make-iqad", str(tmp_path / "nope"), str(tmp_path / "o5"), "--modality", "ct"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert main(["make-iqad", str(source), str(tmp_path / "o6"), "--modality", "ct", "--ratios", "1,1"]) == 2
    assert main(["make-iqad", str(source), str(tmp_path / "o7"), "--modality", "ct", "--severities", "2-7,1,0"]) == 2
