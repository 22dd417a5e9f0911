"""The degradation simulator: determinism, replay, monotonic severity, image kinds, FOV."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data, transform

from mkcnet.degradation import MODALITIES, degrade, estimate_fov, get_family, list_families, replay
from mkcnet.errors import UserError
from mkcnet.synth import generate_fundus

SIDE = 64


@pytest.fixture(scope="module")
def fundus() -> np.ndarray:
    return np.rint(generate_fundus(seed=5, size=SIDE, diagnosis=1)[0] * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    img = transform.resize(data.shepp_logan_phantom(), (SIDE, SIDE), anti_aliasing=True)
    return np.rint(np.clip(0.15 + 0.8 * img, 0, 1) * 255).astype(np.uint8)  # some signal everywhere


def source_for(family: str, fundus: np.ndarray, grey: np.ndarray) -> np.ndarray:
    return fundus if family.startswith("fundus.") else grey


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def test_families_cover_every_modality() -> None:
    for modality in MODALITIES:
        assert list_families(modality), modality
    expected = {"fundus.light", "fundus.halo", "fundus.hole", "fundus.blur", "fundus.spots", "fundus.mixed",
                "xray.gaussian_noise", "xray.speckle_noise", "xray.impulse_noise", "xray.shot_noise",
                "xray.gaussian_blur", "xray.motion_blur", "xray.brightness_up", "xray.brightness_down",
                "xray.contrast_up", "xray.contrast_down", "xray.gamma", "xray.jpeg", "xray.pixelate",
                "ct.streak", "ct.ring", "ct.jpeg", "oct.speckle", "oct.defocus", "oct.motion_blur",
                "oct.contrast_loss"}
    assert expected <= set(list_families())
    assert all(len(get_family(f).scale) == 5 for f in list_families())


@pytest.mark.parametrize("family", list_families())
def test_same_seed_same_bytes_and_replay(family: str, fundus: np.ndarray, grey: np.ndarray) -> None:
    src = source_for(family, fundus, grey)
    a, rec = degrade(src, family, 3, seed=11)
    b, _ = degrade(src, family, 3, seed=11)
    assert a.tobytes() == b.tobytes()
    rec2 = json.loads(json.dumps(rec))  # the record survives JSON
    assert replay(src, rec2).tobytes() == a.tobytes()
    assert not np.array_equal(a, src), "severity 3 should change the image"


@pytest.mark.parametrize("family", list_families())
def test_severity_is_monotonic(family: str, fundus: np.ndarray, grey: np.ndarray) -> None:
    src = source_for(family, fundus, grey)
    scores = [np.mean([psnr(src, degrade(src, family, s, seed=k)[0]) for k in range(4)]) for s in range(1, 6)]
    assert all(np.diff(scores) < 0), f"{family}: PSNR by severity {np.round(scores, 2)}"


@pytest.mark.parametrize("family", ["fundus.mixed", "xray.gaussian_noise", "ct.streak", "oct.speckle", "xray.jpeg"])
def test_kinds_dtypes_and_shapes_round_trip(family: str, grey: np.ndarray, fundus: np.ndarray) -> None:
    rgb = fundus
    inputs = [
        grey, grey[..., None], rgb, grey.astype(np.float32) / 255, rgb.astype(np.float64) / 255,
        grey.astype(np.uint16) * 257, Image.fromarray(grey), Image.fromarray(rgb),
        Image.fromarray(rgb).convert("RGBA"), Image.fromarray(grey.astype(np.uint16) * 257),
    ]
    for img in inputs:
        out, _ = degrade(img, family, 2, seed=0)
        if isinstance(img, Image.Image):
            assert isinstance(out, Image.Image) and out.mode == img.mode and out.size == img.size
        else:
            assert isinstance(out, np.ndarray) and out.dtype == img.dtype and out.shape == img.shape
            if np.issubdtype(out.dtype, np.floating):
                assert 0.0 <= out.min() and out.max() <= 1.0


def test_rgba_alpha_is_kept(fundus: np.ndarray) -> None:
    img = Image.fromarray(fundus).convert("RGBA")
    img.putalpha(Image.fromarray(np.full(fundus.shape[:2], 77, np.uint8)))
    out, _ = degrade(img, "fundus.blur", 4, seed=0)
    assert np.all(np.asarray(out)[..., 3] == 77)


@pytest.mark.parametrize("family", list_families("fundus"))
@pytest.mark.parametrize("as_grey", [False, True])
def test_fundus_families_leave_outside_the_fov_untouched(family: str, as_grey: bool, fundus: np.ndarray) -> None:
    src = fundus.mean(axis=2).astype(np.uint8) if as_grey else fundus
    fov = estimate_fov(src.reshape(SIDE, SIDE, -1).astype(np.float32) / 255)
    assert 0.5 < fov.mask.mean() < 0.85  # a disc, not the whole frame
    for severity in (1, 3, 5):
        out, _ = degrade(src, family, severity, seed=3)
        assert np.array_equal(out[~fov.mask], src[~fov.mask])
    assert not np.array_equal(out[fov.mask], src[fov.mask])  # severity 5 does act inside


def test_fov_of_a_frame_without_surround_is_everything(grey: np.ndarray) -> None:
    assert estimate_fov(np.full((SIDE, SIDE, 1), 0.5, np.float32)).mask.all()
    assert estimate_fov(np.zeros((SIDE, SIDE, 3), np.float32)).mask.all()


def test_unseeded_degradation_records_its_seed(grey: np.ndarray) -> None:
    out, rec = degrade(grey, "xray.shot_noise", 4)
    assert isinstance(rec["seed"], int)
    assert np.array_equal(replay(grey, rec), out)
    assert np.array_equal(degrade(grey, "xray.shot_noise", 4, seed=rec["seed"])[0], out)


def test_fundus_blur_scales_with_image_size() -> None:
    small = get_family("fundus.blur").sample_params(np.random.default_rng(0), 5, (256, 256, 3))
    big = get_family("fundus.blur").sample_params(np.random.default_rng(0), 5, (512, 512, 3))
    assert big["sigma_px"] == pytest.approx(2 * small["sigma_px"], rel=1e-4)
    assert 10 <= big["sigma_px"] <= 15  # severity 5 at 512 px: sigma up to ~15 px


def test_user_errors(grey: np.ndarray) -> None:
    with pytest.raises(UserError, match="severity"):
        degrade(grey, "xray.jpeg", 6)
    with pytest.raises(UserError, match="did you mean"):
        degrade(grey, "gaussian_noise", 2)
    with pytest.raises(UserError, match="modality"):
        list_families("mri")
    with pytest.raises(UserError, match="shape"):
        degrade(np.zeros((4, 4, 2), np.uint8), "xray.jpeg", 2)
    _, rec = degrade(grey, "xray.jpeg", 2, seed=0)
    with pytest.raises(UserError, match="record was made for"):
        replay(grey[:32], rec)
    with pytest.raises(UserError, match="not a degradation record"):
        replay(grey, {"family": "xray.jpeg"})


def test_cli_degrade_replay_and_list(tmp_path, fundus: np.ndarray, capsys) -> None:
    from mkcnet.cli import main

    src = tmp_path / "eye (1) 50%.png"
    Image.fromarray(fundus).save(src)
    out, again, rec = tmp_path / "out.png", tmp_path / "again.png", tmp_path / "rec.json"
    assert main(["degrade", str(src), str(out), "--family", "fundus.spots", "--severity", "4",
                 "--seed", "2", "--record", str(rec)]) == 0
    assert main(["degrade", str(src), str(again), "--replay", str(rec)]) == 0
    assert out.read_bytes() == again.read_bytes()
    assert json.loads(rec.read_text())["family"] == "fundus.spots"
    capsys.readouterr()
    assert main(["degrade", str(src), str(out), "--family", "fundus.blur", "--severity", "2", "--seed", "5"]) == 0
    said = capsys.readouterr().out.strip().splitlines()  # one line saying what was written, no JSON
    assert said == [f"wrote {out} (fundus.blur, severity 2, seed 5); --record FILE keeps the full record for --replay"]
    assert main(["degrade", "--list", "--modality", "oct"]) == 0
    assert "oct.speckle" in capsys.readouterr().out
    assert main(["degrade", str(tmp_path / "missing.png"), str(out), "--family", "fundus.blur", "--severity", "2"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["degrade", str(src), str(out)]) == 2


def test_docs_severity_table_matches_the_code() -> None:
    from pathlib import Path

    from mkcnet.degradation import severity_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "degradation.md").read_text(encoding="utf-8")
    for row in severity_table():
        if row["family"].startswith("ct.") and row["family"] not in ("ct.streak", "ct.ring"):
            row = {**row, "family": "xray." + row["family"].split(".", 1)[1]}  # shared with X-ray
        line = f"| `{row['family']}` | {row['summary']} | " + " | ".join(row[str(s)] for s in range(1, 6)) + " |"
        assert line in doc, f"docs/degradation.md is out of date for {row['family']}"
