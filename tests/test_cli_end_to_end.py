"""One-epoch runs on tiny generated images: every run-directory artefact, then evaluate/predict."""

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mkcnet.checkpoint import load_checkpoint
from mkcnet.cli import main
from mkcnet.inference.results import ResultsPack

TRAIN_FLAGS = ["--dataset", "ct-iqad", "--backbone", "resnet10t", "--meta-backbone", "resnet10t",
               "--image-size", "32", "--batch-size", "8", "--meta-every", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def mkcnet_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mkcnet"
    code = main(["train", "--root", str(tiny_dataset), "--method", "mkcnet", "--epochs", "1", "--out", str(out),
                 *TRAIN_FLAGS])
    assert code == 0
    return out


def test_run_directory_has_every_artefact(mkcnet_run):
    for name in ("config.json", "history.jsonl", "history.csv", "best.safetensors", "best.json",
                 "last.safetensors", "last.json", "state.safetensors"):
        assert (mkcnet_run / name).is_file(), name
    rows = [json.loads(line) for line in (mkcnet_run / "history.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and {"loss.total", "loss.auxiliary", "val.diagnosis.auc", "meta_outer"} <= set(rows[0])
    model = load_checkpoint(mkcnet_run, with_meta=True)
    assert model.meta is not None and model.config.model.method == "mkcnet"
    assert not list(mkcnet_run.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_resume_continues_from_last_epoch(mkcnet_run, tiny_dataset):
    code = main(["train", "--root", str(tiny_dataset), "--method", "mkcnet", "--epochs", "2",
                 "--out", str(mkcnet_run), "--resume", *TRAIN_FLAGS])
    assert code == 0
    epochs = [json.loads(line)["epoch"] for line in (mkcnet_run / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_a_finished_run_carries_on_to_more_epochs_on_its_own_steps(tiny_dataset, tmp_path):
    """`--config RUN/config.json --resume --epochs N`: the run goes on from its last epoch (the
    trainer's resume is bit-identical to an uninterrupted run) with its own LR step size, not the
    preset's step for N epochs."""
    out = tmp_path / "run"
    assert main(["train", "--root", str(tiny_dataset), "--method", "vanilla", "--epochs", "2", "--out", str(out),
                 *TRAIN_FLAGS]) == 0
    step = json.loads((out / "config.json").read_text())["train"]["step_size"]
    assert main(["train", "--config", str(out / "config.json"), "--out", str(out), "--resume", "--epochs", "3",
                 "--quiet"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]
    train = json.loads((out / "config.json").read_text())["train"]
    assert epochs == [1, 2, 3] and train["epochs"] == 3 and train["step_size"] == step


def test_train_refuses_to_overwrite_a_run(mkcnet_run, tiny_dataset, capsys):
    code = main(["train", "--root", str(tiny_dataset), "--epochs", "1", "--out", str(mkcnet_run), *TRAIN_FLAGS])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_evaluate_writes_a_results_pack(mkcnet_run, tiny_dataset, tmp_path):
    out = tmp_path / "pack"
    assert main(["evaluate", str(mkcnet_run), str(tiny_dataset / "val.csv"), "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    pack = ResultsPack.load(out)
    assert len(pack.predictions) == 4
    assert {"image", "diagnosis", "quality", "pred_diagnosis", "prob_diagnosis_0", "prob_quality_1",
            "correct"} <= set(pack.predictions.columns)
    assert np.allclose(pack.probabilities("diagnosis").sum(1), 1, atol=1e-4)
    assert set(pack.features) == {"diagnosis", "quality", "auxiliary", "fused"}
    assert all(len(v) == 4 for v in pack.features.values())
    assert "diagnosis.auc" in pack.header["metrics"]
    # Sets fitted by training's calibration on 4 validation images: too few for a rank, every class.
    assert pack.header["prediction_sets"]["coverage"] == 1 and pack.header["prediction_sets"]["size"] == 2


def test_evaluate_writes_beside_the_split_for_a_bundled_model_and_inside_a_run(mkcnet_run, tiny_dataset, tmp_path,
                                                                             capsys):
    """Without --out: a run's pack goes in the run (eval-SPLIT/, where the workbench finds it); a
    bundled model's folder stays as shipped (the pack goes next to the split); a group with no
    image, and an AUC that one class cannot give, are said in words."""
    from mkcnet.project import project_path

    split = tmp_path / "lq-only.csv"  # the LQ images of the tiny set (quality 0), with their root's names
    rows = [line for line in (tiny_dataset / "val.csv").read_text().splitlines()[1:] if line.endswith(",0")]
    split.write_text("image,diagnosis,quality\n" + "\n".join(rows) + "\n")
    shipped = sorted(p.name for p in project_path("checkpoints", "ct-iqad-vanilla").iterdir())
    assert main(["evaluate", "ct-iqad-vanilla", str(split), "--root", str(tiny_dataset), "--quiet"]) == 0
    assert (tmp_path / "eval-ct-iqad-vanilla-lq-only" / "predictions.csv").is_file()
    assert sorted(p.name for p in project_path("checkpoints", "ct-iqad-vanilla").iterdir()) == shipped
    out = capsys.readouterr().out
    assert re.search(r"^HQ\s+0\s+no HQ images in this split$", out, re.M) and "nan" not in out
    assert "calibration" not in out and out.strip().endswith("eval-ct-iqad-vanilla-lq-only")  # --quiet: metrics, pack
    assert main(["evaluate", str(mkcnet_run), str(split), "--root", str(tiny_dataset), "--quiet"]) == 0
    assert (mkcnet_run / "eval-lq-only" / "predictions.csv").is_file()


def test_evaluate_refuses_images_that_do_not_fit_the_model_in_one_line(tiny_dataset, capsys):
    """Greyscale images through a colour fundus model: one line, exit 2, no pack."""
    assert main(["evaluate", "synth-fundus-mkcnet", str(tiny_dataset / "val.csv"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "do not fit synth-fundus-mkcnet" in err and "greyscale" in err and len(err.splitlines()) == 1
    assert not (tiny_dataset / "eval-synth-fundus-mkcnet-val").exists()


def test_predict_image_folder_and_json(mkcnet_run, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(["predict", str(mkcnet_run), str(tiny_dataset / "Images"), "--format", "csv", "-o", str(out),
                 "--device", "cpu"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 16 and (table["error"] == "").all()
    assert np.allclose(table[["p_diagnosis_non-COVID", "p_diagnosis_COVID-19"]].sum(axis=1), 1, atol=1e-3)
    assert (table["diagnosis_set"] == "non-COVID|COVID-19").all()
    capsys.readouterr()
    image = next((tiny_dataset / "Images").iterdir())
    assert main(["predict", str(mkcnet_run / "best.safetensors"), str(image), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["quality"] in ("LQ", "HQ")


def test_predict_reports_bad_files_without_losing_the_good_ones(mkcnet_run, tiny_dataset, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes(next((tiny_dataset / "Images").iterdir()).read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    assert main(["predict", str(mkcnet_run), str(folder), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "2 of 3 file(s) could not be read" in captured.err
    assert main(["predict", str(mkcnet_run), str(folder / "empty.png")]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["vanilla", "multitask", "mkcnet-fo"])
def test_other_methods_train_one_epoch(method, tiny_dataset, tmp_path):
    assert main(["train", "--root", str(tiny_dataset), "--method", method, "--epochs", "1",
                 "--out", str(tmp_path / method), *TRAIN_FLAGS]) == 0
    model = load_checkpoint(tmp_path / method)
    out = model.task_net(torch.zeros(1, 1, 32, 32))
    assert (out.quality is None) == (method == "vanilla")


def test_clear_errors(tiny_dataset, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("image,diagnosis,quality\nImages/x.png,7,1\n")
    assert main(["train", "--root", str(bad), "--out", str(tmp_path / "r"), *TRAIN_FLAGS]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["train", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *TRAIN_FLAGS]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.safetensors"), "x.png"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--root", str(tiny_dataset), "--out", str(tmp_path / "r"), "--channels", "3",
                 *TRAIN_FLAGS]) == 2
    assert "one per channel" in capsys.readouterr().err


def test_predict_accounts_for_every_input(mkcnet_run, tiny_dataset, tmp_path, capsys):
    """A 1×1 image is an image; GIFs in a folder are read; what is not an image by its name is
    listed, never dropped in silence; the summary counts predictions and errors apart."""
    from PIL import Image

    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(folder / "dot.png")
    Image.open(next((tiny_dataset / "Images").iterdir())).convert("P").save(folder / "scan.gif")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(mkcnet_run), str(folder), "--format", "csv", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(out, keep_default_na=False)
    assert sorted(Path(p).name for p in table["image"]) == ["broken.png", "dot.png", "scan.gif"]
    assert (table.set_index(table["image"].map(lambda p: Path(p).name))["error"] != "").to_dict() == {
        "broken.png": True, "dot.png": False, "scan.gif": False}
    assert "wrote 2 prediction(s) and 1 error row(s)" in captured.out
    assert "skipped 1 file(s) that are not images by their name" in captured.err and "notes.txt" in captured.err


@pytest.mark.parametrize("name, text, message", [
    ("empty.csv", "", r"list file .*empty.csv is empty"),
    ("empty.txt", "", r"list file .*empty.txt is empty"),
    ("header.csv", "image\n", r"list file .*header.csv names no images"),
    ("quote.csv", 'image\n"a.png\nb.png\n', r"cannot read list file .*quote.csv: EOF inside string starting at row 1"),
    ("nul.csv", "image\na.png\nb\0.png\n", r"nul.csv, line 3: the file name holds a NUL byte"),
])
def test_a_bad_list_file_is_one_line(mkcnet_run, tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    assert main(["predict", str(mkcnet_run), str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err


def test_predict_lists_what_in_a_folder_is_not_a_regular_file(mkcnet_run, tiny_dataset, tmp_path, capsys):
    """A FIFO (reading it would block), a link loop, a folder named like an image and a linked
    folder (not followed) are listed, not dropped in silence; a plain subfolder is searched."""
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    image = next((tiny_dataset / "Images").iterdir())
    (folder / "sub" / "scan.png").write_bytes(image.read_bytes())
    os.mkfifo(folder / "pipe.png")
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "folder.png").mkdir()
    (folder / "linked").symlink_to(folder / "sub", target_is_directory=True)
    assert main(["predict", str(mkcnet_run), str(folder), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert [Path(p).name for p in pd.read_csv(io.StringIO(captured.out))["image"]] == ["scan.png"]
    assert "skipped 4 item(s) that are not regular files" in captured.err
    assert all(name in captured.err for name in ("pipe.png", "loop.png", "folder.png", "linked")), captured.err


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from mkcnet.data.images import read_image

    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255  # a bright left edge
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "photo.jpg")
    assert shown.shape[:2] == (20, 10)  # as a viewer shows it: portrait
    assert shown[:5].mean() > 200 and shown[-5:].mean() < 50  # the bright edge is now on top


def test_predict_a_nifti_slice_with_a_window_and_its_robustness(mkcnet_run, tmp_path, capsys):
    import nibabel as nib

    volume = np.stack([np.full((24, 20), v, np.int16) for v in (-1000, -600, 40)], axis=2)  # HU, 3 slices
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "scan.nii.gz")
    assert main(["predict", str(mkcnet_run), str(tmp_path), "--slice", "0", "--window", "lung", "--robustness",
                 "--format", "json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["error"] == "" and rows[0]["image"].endswith("scan.nii.gz")
    margins = {k: v for k, v in rows[0].items() if k.startswith("robust_")}
    assert len(margins) == 15 and all(v == "holds" or v in "12345" for v in margins.values())  # the CT families
    assert main(["predict", str(mkcnet_run), str(tmp_path / "scan.nii.gz"), "--slice", "3"]) == 2
    assert "slice 3 does not exist" in capsys.readouterr().err


def test_progress_goes_to_stderr_and_quiet_silences_it(mkcnet_run, tiny_dataset, tmp_path, capsys):
    """predict and evaluate say what they do during their silent seconds (loading torch and the
    model, decoding, the network) on stderr: `--format json` on stdout still parses; `--quiet`
    leaves stderr empty."""
    image = str(tiny_dataset / "Images" / "img 00%1 (copy).png")
    assert main(["predict", str(mkcnet_run), image, "--format", "json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["image"] == image
    assert [line.split("…")[0] for line in captured.err.splitlines()] == [
        f"mkcnet predict: loading {mkcnet_run}", "mkcnet predict: reading 1 image(s)",
        "mkcnet predict: running the network on 1 image(s)"]
    assert main(["predict", str(mkcnet_run), image, "--format", "json", "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["image"] == image and captured.err == ""
    out = tmp_path / "pack"
    assert main(["evaluate", str(mkcnet_run), str(tiny_dataset / "val.csv"), "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if line.startswith("mkcnet evaluate:")]
    assert [line.split("…")[0] for line in said] == [
        f"mkcnet evaluate: loading {mkcnet_run}", "mkcnet evaluate: reading the split val.csv",
        "mkcnet evaluate: decoding 4 images", "mkcnet evaluate: running the network on 4 images",
        "mkcnet evaluate: metrics and calibration"]
    assert "mkcnet evaluate" not in captured.out and f"results pack: {out}" in captured.out
    assert main(["evaluate", str(mkcnet_run), str(tiny_dataset / "val.csv"), "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    assert capsys.readouterr().err == ""
