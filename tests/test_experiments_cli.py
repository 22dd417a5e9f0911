"""`mkcnet bench`, `ood`, `embed` and `grads` end to end on the tiny data set (32 px, one epoch)."""

import json

import pandas as pd
import pytest

from mkcnet.cli import main
from mkcnet.training.trainer import Trainer
from tests.conftest import single_thread

pytestmark = pytest.mark.usefixtures("one_thread")


def bench_args(root, out, epochs, methods=("vanilla", "mkcnet-fo")):
    return ["bench", "--data", f"ct-iqad={root}", "--methods", *methods, "--seeds", "0", "--split", "val",
            "--epochs", str(epochs), "--image-size", "32", "--batch-size", "8", "--device", "cpu", "--out", str(out),
            "--no-png"]


@pytest.fixture(scope="module")
def bench_dir(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with single_thread():
        assert main(bench_args(tiny_dataset, out, 1)) == 0
    return out


def test_bench_writes_the_tables(bench_dir):
    runs = pd.read_csv(bench_dir / "runs.csv")
    assert runs[["method", "seed"]].values.tolist() == [["vanilla", 0], ["mkcnet-fo", 0]]
    assert {"all.AUC", "HQ.ACC", "LQ.F1", "best_epoch", "train_minutes"} <= set(runs.columns)
    table = pd.read_csv(bench_dir / "table.csv", index_col=0)
    assert list(table.index) == ["vanilla", "mkcnet-fo"] and list(table.columns) == [
        "ct-iqad AUC", "ct-iqad AUC(hard)", "ct-iqad ACC", "ct-iqad F1"]
    paired = pd.read_csv(bench_dir / "paired.csv")  # mkcnet-fo − vanilla, seed by seed, as by hand
    row = paired[(paired["group"] == "all") & (paired["metric"] == "AUC")].iloc[0]
    by_method = runs.set_index("method")["all.AUC"]
    assert row["comparison"] == "mkcnet-fo − vanilla"
    assert row["mean"] == pytest.approx(by_method["mkcnet-fo"] - by_method["vanilla"])
    assert (bench_dir / "table_hq.csv").is_file() and (bench_dir / "table_lq.csv").is_file()
    markdown = (bench_dir / "table.md").read_text()
    assert "## HQ images only" in markdown and "| mkcnet-fo" in markdown
    assert (bench_dir / "grads-ct-iqad.html").is_file()  # mkcnet-fo logs gradient cosines
    for run in ("vanilla", "mkcnet-fo"):
        assert (bench_dir / "runs" / "ct-iqad" / run / "seed0" / "eval-val" / "predictions.csv").is_file()


def test_bench_skips_finished_runs_and_resumes_the_rest(bench_dir, tiny_dataset, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "fit", refuse)
    assert main(bench_args(tiny_dataset, bench_dir, 1)) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2
    monkeypatch.undo()
    # One more epoch for vanilla: it resumes from epoch 1 instead of starting over.
    assert main(bench_args(tiny_dataset, bench_dir, 2, methods=["vanilla"])) == 0
    log = bench_dir / "runs" / "ct-iqad" / "vanilla" / "seed0" / "history.jsonl"
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]


def test_ood_embed_and_grads_commands(bench_dir, tmp_path, capsys):
    runs = bench_dir / "runs" / "ct-iqad"
    assert main(["ood", str(runs / "vanilla" / "seed0"), f"fo={runs / 'mkcnet-fo' / 'seed0' / 'eval-val'}",
                 "--out", str(tmp_path / "ood"), "--repeats", "5", "--ratios", "3", "--no-png"]) == 0
    curves = pd.read_csv(tmp_path / "ood" / "ood_curves.csv")
    assert set(curves["run"]) == {"vanilla/seed0", "fo"} and len(curves) == 2 * 3 * 3
    assert (tmp_path / "ood" / "ood_auc.html").is_file()
    assert main(["embed", str(runs / "mkcnet-fo" / "seed0"), "--out", str(tmp_path / "emb"), "--no-png"]) == 0
    for branch in ("diagnosis", "quality", "auxiliary", "fused"):
        table = pd.read_csv(tmp_path / "emb" / f"embedding_{branch}_tsne.csv")
        assert len(table) == 4  # one row per validation image
    assert len(pd.read_csv(tmp_path / "emb" / "separation.csv")) == 4
    assert main(["grads", str(runs / "mkcnet-fo" / "seed0"), "--by", "method", "--out", str(tmp_path / "grads"),
                 "--no-png"]) == 0
    grads = pd.read_csv(tmp_path / "grads.csv")
    assert set(grads["run"]) == {"mkcnet-fo"} and set(grads["pair"]) == {"diagnosis vs quality",
                                                                        "diagnosis vs auxiliary"}
    capsys.readouterr()
    assert main(["grads", str(runs / "vanilla" / "seed0"), "--out", str(tmp_path / "g2")]) == 2
    assert "no grad_cos" in capsys.readouterr().err


def test_split_per_data_set(tiny_dataset, tmp_path):
    from mkcnet.analysis.bench import Bench, DatasetSpec, parse_splits
    from mkcnet.errors import UserError

    specs = [DatasetSpec.parse(f"ct-iqad={tiny_dataset}"), DatasetSpec.parse(f"synth-fundus={tiny_dataset}")]
    datasets, default = parse_splits(specs, ["val", "synth-fundus=test"])
    bench = Bench(datasets, ["vanilla"], [0], tmp_path, split=default)
    assert [r.pack_dir.name for r in bench.runs()] == ["eval-val", "eval-test"]
    assert bench.describe_splits() == "splits `val` (ct-iqad), `test` (synth-fundus)"
    assert parse_splits(specs, [])[1] == "test"
    with pytest.raises(UserError, match="NAME one of ct-iqad, synth-fundus"):
        parse_splits(specs, ["eyeq=val"])


def test_find_split_names_and_fallbacks(tiny_dataset):
    from mkcnet.data.dataset import find_split
    from mkcnet.errors import UserError

    assert find_split(tiny_dataset, "val") == find_split(tiny_dataset, "val.csv") == tiny_dataset / "val.csv"
    assert find_split(tiny_dataset, fallbacks=("missing.csv", "train.csv")) == tiny_dataset / "train.csv"
    with pytest.raises(UserError, match="split file nope.csv not found"):
        find_split(tiny_dataset, "nope")


def grid_args(root, out, *extra):
    """A 4-cell grid: 2 methods × 2 seeds on the tiny data set."""
    return [*bench_args(root, out, 1), "--seeds", "0", "1", *extra]


def cells(folder):
    return {tuple(p.relative_to(folder / "runs").parts) for p in (folder / "runs").glob("*/*/seed*")
            if (p / "eval-val" / "predictions.csv").is_file()}


@pytest.mark.slow
def test_three_shards_split_the_grid_and_collect_reproduces_its_table(tiny_dataset, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert main(grid_args(tiny_dataset, whole)) == 0
    grid = cells(whole)
    assert len(grid) == 4
    shards = [tmp_path / f"shard{i}" for i in (1, 2, 3)]
    # The first shard trains its two cells at once, one worker process per device.
    assert main(grid_args(tiny_dataset, shards[0], "--shard", "1/3", "--devices", "cpu,cpu")) == 0
    assert "on cpu" in capsys.readouterr().out
    for i in (2, 3):
        assert main(grid_args(tiny_dataset, shards[i - 1], "--shard", f"{i}/3")) == 0
    parts = [cells(s) for s in shards]
    assert [len(p) for p in parts] == [2, 1, 1]
    assert set().union(*parts) == grid and sum(map(len, parts)) == len(grid)  # disjoint, and they cover the grid
    merged = tmp_path / "merged"
    assert main(["bench", "--collect", *map(str, shards), "--out", str(merged), "--no-png"]) == 0
    for table in ("table.csv", "table_hq.csv", "table_lq.csv"):
        assert (merged / table).read_text() == (whole / table).read_text(), table
    numbers = ["all.AUC", "all.ACC", "all.F1", "LQ.AUC", "best_epoch"]
    expected, got = pd.read_csv(whole / "runs.csv"), pd.read_csv(merged / "runs.csv")
    assert got[["dataset", "method", "seed"]].values.tolist() == expected[["dataset", "method", "seed"]].values.tolist()
    pd.testing.assert_frame_equal(got[numbers], expected[numbers])
    # Collecting overlapping folders is refused, naming the cell.
    assert main(["bench", "--collect", str(whole), str(shards[1]), "--out", str(tmp_path / "bad")]) == 2
    assert "must be disjoint" in capsys.readouterr().err


def test_bench_shard_and_devices_are_checked(tiny_dataset, tmp_path, capsys):
    assert main(grid_args(tiny_dataset, tmp_path, "--shard", "4/3")) == 2
    assert "--shard wants i/n" in capsys.readouterr().err
    assert main(grid_args(tiny_dataset, tmp_path, "--devices", "cpu,gpu0")) == 2
    assert "--devices" in capsys.readouterr().err
    assert main(grid_args(tiny_dataset, tmp_path, "--shard", "5/5")) == 0  # 4 cells: the 5th share is empty
    assert "holds none" in capsys.readouterr().out
    assert main(["bench", "--out", str(tmp_path)]) == 2
    assert "--data NAME=ROOT is required" in capsys.readouterr().err


def test_ood_reads_each_pack_once_and_reports_on_stderr(tmp_path, capsys, monkeypatch):
    """`mkcnet ood` on hand-made packs: its progress on stderr (stdout holds the results), none with
    --quiet; each pack is read from disk once, however many steps use it (--by method reads them
    for their names too)."""
    from mkcnet.inference.results import ResultsPack
    from tests.test_analysis_api import hand_made_pack

    packs = []
    for name in ("a", "b"):
        pack = hand_made_pack()
        pack.header["model"]["method"] = "vanilla"
        packs.append(str(pack.save(tmp_path / name)))
    loads = []
    real_load = ResultsPack.load.__func__
    monkeypatch.setattr(ResultsPack, "load", classmethod(lambda cls, folder: loads.append(folder)
                                                            or real_load(cls, folder)))
    assert main(["ood", *packs, "--by", "method", "--out", str(tmp_path / "ood"), "--repeats", "5", "--no-png"]) == 0
    captured = capsys.readouterr()
    assert sorted(map(str, loads)) == packs
    assert captured.err.splitlines()[0] == "mkcnet ood: reading 2 results pack(s)…"
    assert "reading 2 results" not in captured.out and "vanilla" in captured.out and "wrote " in captured.out
    assert main(["ood", *packs, "--out", str(tmp_path / "ood"), "--repeats", "5", "--no-png", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
