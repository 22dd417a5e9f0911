"""Split files users can trust: every problem one line that names the file, the row and what
is wrong; nothing lost in silence."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from mkcnet.cli import main
from mkcnet.config import InputSpec
from mkcnet.data.dataset import ImageSet, read_split
from mkcnet.errors import UserError
from mkcnet.project import project_path
from tests.conftest import write_dataset

HEADER = "image,diagnosis,quality"


@pytest.fixture
def root(tmp_path):
    return write_dataset(tmp_path / "data", n_per_cell=2)


def split(root, *rows: str, header: str | None = HEADER):
    path = root / "test-split.csv"
    path.write_text("\n".join(([header] if header else []) + list(rows)) + "\n")
    return path


A, B = "Images/img 00%1 (copy).png", "Images/img 11%1 (copy).png"


@pytest.mark.parametrize("rows, header, message", [
    ((f"{A},-1,1",), HEADER, r"row 2: diagnosis -1: every row needs a diagnosis label"),
    ((f"{A},0,1", f"{B},1,1"), None, r"the first line looks like a row, not a header"),
    ((A, B), "image", r"one column found"),
    ((), HEADER, r"a header and no rows"),
    ((f"{A},0,1", f"{B},x,1"), HEADER, r"row 3: diagnosis must be an integer, got 'x'"),
    ((f"{A},0,1", f"{B},5,1"), HEADER, r"row 3: diagnosis label 5 is out of range \(expected 0..1\)"),
    ((f"{A},0,1", f"{B},1,1", f"{A},1,1"), HEADER, r"rows 2 and 4: .* has conflicting labels"),
])
def test_a_bad_split_file_gets_one_line_naming_the_row(root, rows, header, message):
    with pytest.raises(UserError, match=message) as caught:
        read_split(split(root, *rows, header=header), root, None, 2, 2)
    assert "test-split.csv" in str(caught.value) and "\n" not in str(caught.value)


def test_an_unlabelled_quality_is_accepted_and_duplicates_are_reported(root):
    table = read_split(split(root, f"{A},0,-1", f"{B},1,1"), root, None, 2, 2)
    assert table.quality.tolist() == [-1, 1]
    with pytest.warns(UserWarning, match=r"rows 2 and 3 name the same image"):
        assert len(read_split(split(root, f"{A},0,1", f"{A},0,1"), root, None, 2, 2)) == 2


def test_train_and_evaluate_refuse_an_unlabelled_diagnosis_with_one_line(root, tmp_path, capsys):
    (root / "train.csv").write_text(f"{HEADER}\n{A},-1,1\n{B},1,1\n")
    assert main(["train", "--root", str(root), "--epochs", "1", "--image-size", "32", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.csv, row 2: diagnosis -1" in err and "Traceback" not in err


LONG = "Images/" + "x" * 300 + ".png"


def hostile(root, case: str):
    """A split file as a careless or hostile hand writes it; each case → (file, the expected line)."""
    if case == "link loop":
        (root / "Images" / "loop.png").symlink_to("loop.png")
        return split(root, f"{A},0,1", "Images/loop.png,1,1"), r"row 3: 'Images/loop.png' .*symbolic-link loop"
    if case == "long name":
        return split(root, f"{LONG},0,1"), r"row 2: 'Images/xxx.*…' cannot be looked up \(file name too long\)"
    if case == "NUL byte":
        return split(root, f"{A},0,1", "Images/a\0b.png,1,1"), r"row 3: .*NUL byte"
    raise ValueError(case)


@pytest.mark.parametrize("rows, header, message", [
    ((f"{A},0,1", f"{B},inf,1"), HEADER, r"row 3: diagnosis must be an integer, got 'inf'"),
    ((f"{A},0,1", f"{B},1,99999999999999999999"), HEADER, r"row 3: quality label 99999999999999999999 is out of range"),
    ((f"{A},0,1,extra", f"{B},1,1"), HEADER, r"row 2: 4 fields, but the header names 3"),
    ((f"{A},0,1", f'"{B},1,1', f"{A},0,1"), HEADER, r"row 3: cannot parse \(a quote left open\)"),
    ((f"{A},0,1", "", f"{B},x,1"), HEADER, r"row 4: diagnosis must be an integer"),  # rows are lines of the file
    ((), None, r"empty; expected a header line"),
])
def test_a_hostile_split_file_gets_one_line_naming_the_row(root, rows, header, message):
    with pytest.raises(UserError, match=message) as caught, warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning on the way
        read_split(split(root, *rows, header=header), root, None, 2, 2)
    assert "test-split.csv" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["link loop", "long name", "NUL byte"])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_name_the_row_of_an_unreadable_path(root, tmp_path, capsys, case, command):
    path, message = hostile(root, case)
    if command == "train":
        path.rename(root / "train.csv")
        args = ["train", "--root", str(root), "--epochs", "1", "--image-size", "32", "--out", str(tmp_path / "r")]
    else:
        args = ["evaluate", str(project_path("checkpoints") / "ct-iqad-vanilla"), str(path), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # a refused start leaves no run folder


def test_a_one_image_training_split_is_refused_in_one_line(root, tmp_path, capsys):
    (root / "train.csv").write_text(f"{HEADER}\n{A},0,1\n")
    assert main(["train", "--root", str(root), "--epochs", "1", "--image-size", "32", "--val-split", "",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the training split holds 1 image(s): training needs 2 or more" in err and "Traceback" not in err


def test_rows_naming_one_image_decode_it_once(root, monkeypatch):
    from mkcnet.data import dataset

    decoded = []
    real = dataset.load_resized
    monkeypatch.setattr(dataset, "load_resized", lambda f, *args: decoded.append(f) or real(f, *args))
    with pytest.warns(UserWarning, match="name the same image .* and 998 more"):
        table = read_split(split(root, *[f"{A},0,1"] * 1000), root, None, 2, 2)
    data = ImageSet.load(table, InputSpec(1, 32, (0.5,), (0.25,)), progress=False)
    assert len(decoded) == 1 and data.images.shape == (1000, 1, 32, 32)
    assert torch.equal(data.images[0], data.images[999])
