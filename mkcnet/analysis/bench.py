"""`mkcnet bench`: methods × data sets × seeds under one budget, and the paper's Table 2 from it.

Layout of the output folder:
    runs/DATASET/METHOD/seedS/          an ordinary run directory (mkcnet train)
    runs/DATASET/METHOD/seedS/eval-SPLIT/   its results pack (mkcnet evaluate, best checkpoint)
    runs.csv                            one row per run: diagnosis metrics on all / HQ / LQ images
    summary.csv                         mean, std and count over seeds per data set (and "average")
    table.md, table{,_hq,_lq}.csv       the Table 2 layout: methods × (data set, AUC/ACC/F1)
    grads-DATASET.html                  gradient cosines over epochs, mean over seeds per method

A run is finished when its history reaches the last epoch and its results pack exists; finished
runs are skipped, interrupted ones resume from their last epoch, so the command can be re-run
after a crash, with more seeds, or with more methods.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mkcnet.config import RunConfig
from mkcnet.data.dataset import ImageSet, find_split, read_split
from mkcnet.errors import UserError
from mkcnet.inference.evaluate import evaluate_split
from mkcnet.inference.results import ResultsPack
from mkcnet.methods import apply_method
from mkcnet.presets import DATASETS, DatasetPreset, build_run_config, dataset_from_file
from mkcnet.training.trainer import Trainer

GROUPS = {"all": "", "HQ": "HQ.", "LQ": "LQ."}
METRICS = {"AUC": "auc", "ACC": "acc", "F1": "f1"}


@dataclass(frozen=True)
class DatasetSpec:
    """A data set of the grid: its preset (a name or a JSON data-set config), its root folder and,
    where it differs from the grid's, the split it is evaluated on."""

    preset: DatasetPreset
    root: Path
    split: str | None = None

    @property
    def name(self) -> str:
        return self.preset.name

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """`NAME=ROOT`, NAME a data-set preset or a .json data-set config file."""
        name, sep, root = text.partition("=")
        if not sep or not root:
            raise UserError(f"--data wants NAME=ROOT (e.g. ct-iqad=../data/ct-iqad), got {text!r}")
        if name.endswith(".json"):
            preset = dataset_from_file(name)
        elif name in DATASETS:
            preset = DATASETS[name]
        else:
            raise UserError(f"unknown data-set preset {name!r}; choose from {', '.join(DATASETS)} or give a .json config")
        if not Path(root).is_dir():
            raise UserError(f"data-set root not found: {root}")
        return cls(preset, Path(root))


def parse_splits(datasets: Sequence[DatasetSpec], entries: Sequence[str], default: str = "test"
                 ) -> tuple[list[DatasetSpec], str]:
    """`--split` entries: `SPLIT` for every data set, `NAME=SPLIT` for one (the last of each wins)."""
    names = {d.name for d in datasets}
    per_dataset = {}
    for entry in entries:
        name, sep, split = entry.partition("=")
        if not sep:
            default = entry
        elif name in names and split:
            per_dataset[name] = split
        else:
            raise UserError(f"--split {entry!r}: want SPLIT or NAME=SPLIT with NAME one of {', '.join(sorted(names))}")
    return [dataclasses.replace(d, split=per_dataset.get(d.name, d.split)) for d in datasets], default


@dataclass(frozen=True)
class Budget:
    """How big every run of the grid is: a training preset and its overrides."""

    preset: str = "cpu"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    train_lq_ratio: float | None = None
    device: str = "auto"

    def config(self, dataset: DatasetSpec, method: str, seed: int) -> RunConfig:
        config = build_run_config(dataset.preset, self.preset, method, root=str(dataset.root), seed=seed,
                                  epochs=self.epochs, image_size=self.image_size, batch_size=self.batch_size,
                                  train_lq_ratio=self.train_lq_ratio, device=self.device)
        return apply_method(config)


@dataclass
class BenchRun:
    dataset: DatasetSpec
    method: str
    seed: int
    run_dir: Path
    pack_dir: Path

    def epochs_done(self) -> int:
        log = self.run_dir / "history.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        return json.loads(lines[-1])["epoch"] if lines else 0

    def finished(self, epochs: int) -> bool:
        return self.epochs_done() >= epochs and (self.pack_dir / "predictions.csv").is_file()


@dataclass
class Bench:
    datasets: Sequence[DatasetSpec]
    methods: Sequence[str]
    seeds: Sequence[int]
    out: Path
    budget: Budget = field(default_factory=Budget)
    split: str = "test"
    log: Callable[[str], None] = print
    _images: dict = field(default_factory=dict, repr=False)  # decoded splits, shared by the runs

    def runs(self) -> list[BenchRun]:
        def run(dataset: DatasetSpec, method: str, seed: int) -> BenchRun:
            run_dir = self.out / "runs" / dataset.name / method / f"seed{seed}"
            return BenchRun(dataset, method, seed, run_dir, run_dir / f"eval-{Path(self.split_of(dataset)).stem}")

        return [run(d, m, s) for d in self.datasets for m in self.methods for s in self.seeds]

    def split_of(self, dataset: DatasetSpec) -> str:
        return dataset.split or self.split

    def describe_splits(self) -> str:
        splits = {d.name: self.split_of(d) for d in self.datasets}
        if len(set(splits.values())) == 1:
            return f"`{next(iter(splits.values()))}` split"
        return "splits " + ", ".join(f"`{split}` ({name})" for name, split in splits.items())

    def _load(self, config: RunConfig, split: str) -> ImageSet:
        mc, root = config.model, Path(config.data.root)
        key = (str(root), split, mc.in_chans, mc.image_size)
        if key not in self._images:
            table = read_split(root / split, root, config.data.diagnosis_map, mc.num_diagnosis, mc.num_quality)
            self._images[key] = ImageSet.load(table, mc.in_chans, mc.image_size, mc.mean, mc.std, progress=False)
        return self._images[key]

    def run_one(self, run: BenchRun) -> ResultsPack:
        config = self.budget.config(run.dataset, run.method, run.seed)
        epochs = config.train.epochs
        if run.finished(epochs):
            return ResultsPack.load(run.pack_dir)
        done = run.epochs_done()
        if done < epochs:
            val_split = config.data.val_split
            val = self._load(config, val_split) if val_split and (run.dataset.root / val_split).is_file() else None
            resume = done > 0 and (run.run_dir / "state.safetensors").is_file()
            Trainer(config, run.run_dir, progress=False).fit(self._load(config, config.data.train_split), val,
                                                            resume=resume)
        split = find_split(run.dataset.root, self.split_of(run.dataset))
        return evaluate_split(run.run_dir, split, run.dataset.root, run.pack_dir, device=self.budget.device,
                              progress=False)

    def run(self, dry_run: bool = False) -> pd.DataFrame:
        """Train and evaluate what is not finished; return runs.csv's table (finished runs only)."""
        runs, rows = self.runs(), []
        for d in self.datasets:
            find_split(d.root, self.split_of(d))  # fail before hours of training, not after
        for i, run in enumerate(runs, 1):
            label = f"[{i}/{len(runs)}] {run.dataset.name} / {run.method} / seed {run.seed}"
            epochs = self.budget.config(run.dataset, run.method, run.seed).train.epochs
            if dry_run:
                self.log(f"{label}: {'finished' if run.finished(epochs) else f'{run.epochs_done()}/{epochs} epochs'}")
                continue
            skip = run.finished(epochs)
            start = time.perf_counter()
            pack = self.run_one(run)
            m = pack.header["metrics"]
            self.log(f"{label}: {'finished before, skipped' if skip else f'{(time.perf_counter() - start) / 60:.1f} min'}"
                     f"  AUC {m.get('diagnosis.auc', float('nan')):.4f}  ACC {m.get('diagnosis.acc', float('nan')):.4f}"
                     f"  F1 {m.get('diagnosis.f1', float('nan')):.4f}")
            rows.append(run_row(run, pack))
        return pd.DataFrame(rows)


def run_row(run: BenchRun, pack: ResultsPack) -> dict:
    m = pack.header["metrics"]
    best, last = (json.loads((run.run_dir / f"{name}.json").read_text())["info"] for name in ("best", "last"))
    row = {"dataset": run.dataset.name, "method": run.method, "seed": run.seed, "best_epoch": best["epoch"],
           "train_minutes": last["minutes"]}
    for group, prefix in GROUPS.items():
        row[f"{group}.n"] = m.get(f"diagnosis.{prefix}n")
        for label, key in METRICS.items():
            row[f"{group}.{label}"] = m.get(f"diagnosis.{prefix}{key}")
    return row


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: dataset (plus "average" over data sets, per seed), method, group, metric, mean, std, seeds."""
    value_cols = [f"{g}.{m}" for g in GROUPS for m in METRICS]
    long = runs.melt(id_vars=["dataset", "method", "seed"], value_vars=value_cols, var_name="key")
    if runs["dataset"].nunique() > 1:
        average = long.groupby(["method", "seed", "key"], as_index=False)["value"].mean().assign(dataset="average")
        long = pd.concat([long, average], ignore_index=True)
    long[["group", "metric"]] = long["key"].str.split(".", n=1, expand=True)
    out = long.groupby(["dataset", "method", "group", "metric"], sort=False)["value"].agg(
        mean="mean", std="std", seeds="count").reset_index()
    return out


def wide_table(summary: pd.DataFrame, group: str, methods: Sequence[str]) -> pd.DataFrame:
    """Rows: methods in the given order; columns: (data set, AUC/ACC/F1) → "mean ± std"."""
    part = summary[summary["group"] == group].copy()
    part["cell"] = [f"{m:.4f}" if pd.isna(s) else f"{m:.4f} ± {s:.4f}" for m, s in zip(part["mean"], part["std"])]
    table = part.pivot(index="method", columns=["dataset", "metric"], values="cell")
    datasets = list(dict.fromkeys(part["dataset"]))
    table = table.reindex(index=[m for m in methods if m in table.index],
                          columns=pd.MultiIndex.from_product([datasets, list(METRICS)]))
    return table


def write_tables(runs: pd.DataFrame, out: Path, methods: Sequence[str], title: str) -> list[Path]:
    summary = summarise(runs)
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    written = [out / "runs.csv", out / "summary.csv"]
    sections = [title, ""]
    for group, suffix, caption in (("all", "", "All evaluation images"), ("HQ", "_hq", "HQ images only"),
                                   ("LQ", "_lq", "LQ images only")):
        table = wide_table(summary, group, methods)
        flat = table.set_axis([f"{d} {m}" for d, m in table.columns], axis=1)
        flat.to_csv(out / f"table{suffix}.csv")
        written.append(out / f"table{suffix}.csv")
        sections += [f"## {caption}", "", flat.to_markdown(), ""]
    (out / "table.md").write_text("\n".join(sections))
    return [*written, out / "table.md"]
