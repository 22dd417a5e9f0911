"""Split files users can trust: every problem one line that names the file, the row and what
is wrong; nothing lost in silence."""

from __future__ import annotations

import pytest

from mkcnet.cli import main
from mkcnet.data.dataset import read_split
from mkcnet.errors import UserError
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
